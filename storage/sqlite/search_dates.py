"""Single-valued date clauses (storage/single_dates.py) in SQL: one test of the entry, its `lo` bounded, so one index
range on (param, lo)."""

from __future__ import annotations

from typing import Sequence

from hearth.search.ir import Clause
from hearth.storage.single_dates import lo_range
from hearth.storage.sqlite.search_preds import Cond, joined, range_alts, tabled


def single_date_cond(clauses: Sequence[Clause]) -> Cond:
    """The clauses (ANDed, on one single-valued date parameter) as one test of its entry, `lo` bounded."""
    low, high = lo_range(clauses)
    bounds = [(sql, value) for sql, value in (("e.lo >= ?", low), ("e.lo <= ?", high)) if value is not None]
    conds, args = [sql for sql, _ in bounds], [value for _, value in bounds]
    for clause in clauses:
        alts = tabled([alt for pred in clause.preds for alt in range_alts(pred.ranges, _COLUMNS)])
        conds.append("(" + joined(" OR ", [f"({sql})" for sql, _ in alts]) + ")")
        args.extend(arg for _, alt_args in alts for arg in alt_args)
    return Cond("idx_date", ((joined(" AND ", conds), tuple(args)),))


_COLUMNS = {"lo": "e.lo", "hi": "e.hi"}
