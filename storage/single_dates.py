"""Date clauses on a single-valued date parameter (Clause.single_date, e.g. `birthdate`) as one bounded range, for
every backend.

Each comparison of a date clause alone is a half-open range over an entry's `lo` or `hi` (`ge`: `lo >= ? OR hi > ?`),
so `birthdate=ge1982-01-01&birthdate=lt1983-01-01` would read every birth date after 1982 or every one before
1983 and test the other clause per row. When a resource has at most one value, a date/dateTime/instant whose
range spans at most a year, the clauses on that parameter all test the same entry, and every bound on `hi`
implies one on `lo`; so a backend compiles them to one condition on the entry with an explicit `lo` range
(`lo_range`), one index range on (param, lo) as wide as the search (plus a year, the most a value can span).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Sequence

from hearth.search.ir import Bound, Clause, DatePred

_SPAN = timedelta(days=366)  # the widest range one date value has: a year (a leap year) at year precision

LoRange = tuple[str | None, str | None]  # an entry's `lo` lies in [low, high]; None: no bound


def group_single_dates(where: Sequence[Clause]) -> list[Clause | tuple[Clause, ...]]:
    """`where` with the single-valued date clauses grouped by parameter (a tuple, where the first was)."""
    out: list[Clause | tuple[Clause, ...]] = []
    groups: dict[str, list[Clause]] = {}
    for clause in where:
        if not (clause.single_date and clause.param != "_lastUpdated"
                and all(isinstance(pred, DatePred) for pred in clause.preds)):
            out.append(clause)
        elif clause.param in groups:
            groups[clause.param].append(clause)
        else:
            groups[clause.param] = [clause]
            out.append(clause)
    return [tuple(groups[item.param]) if item.param in groups and groups[item.param][0] is item else item
            for item in out]


def lo_range(clauses: Sequence[Clause]) -> LoRange:
    """Where the `lo` of the one entry meeting all `clauses` (ANDed, on one single-valued date parameter) lies."""
    return _intersection([_union([_intersection([_lo_bound(bound) for bound in alternative])
                                  for pred in clause.preds for alternative in pred.ranges])
                          for clause in clauses])


def _lo_bound(bound: Bound) -> LoRange:
    """Where the `lo` of an entry meeting `bound` can be, given its `hi` is at most _SPAN later (and never
    earlier): a bound on `hi` from above is one on `lo`; from below, one on `lo` less _SPAN."""
    operand = str(bound.operand)
    if bound.op in ("<", "<="):
        return None, operand
    return (operand if bound.field == "lo" else _minus_span(operand)), None


def _union(bounds: Sequence[LoRange]) -> LoRange:
    lows, highs = [b[0] for b in bounds], [b[1] for b in bounds]
    return (None if None in lows else min(lows)), (None if None in highs else max(highs))  # type: ignore[type-var]


def _intersection(bounds: Sequence[LoRange]) -> LoRange:
    lows = [b[0] for b in bounds if b[0] is not None]
    highs = [b[1] for b in bounds if b[1] is not None]
    return (max(lows) if lows else None), (min(highs) if highs else None)


def _minus_span(instant: str) -> str | None:
    """`instant` (a normalised UTC instant, search/normalize.py) less _SPAN; None before the year 1."""
    try:
        return (datetime.fromisoformat(instant) - _SPAN).isoformat(timespec="microseconds")
    except OverflowError:
        return None
