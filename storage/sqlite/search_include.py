"""`_include` / `_revinclude` (with `:iterate` and `*`): one include's lookup from a set of resources, for
search/ir.py include_closure (which applies them, to a fixpoint, within its bound)."""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import orjson

from hearth.search.ir import Include


_PARAMS = ("SELECT min(param) FROM idx_reference UNION ALL SELECT (SELECT min(x.param) FROM idx_reference x "
           "WHERE x.param > p.param) FROM p WHERE p.param IS NOT NULL")


@lru_cache(maxsize=64)
def _statement(include: Include) -> tuple[str, tuple]:
    """SQL taking a JSON array of rids (the resources included from) and yielding the rids it includes."""
    conds, args = [], []  # joined on target_id: local references only (URLs have none)
    if include.reverse:
        # `source_type` resources whose `param` references one of the given ones; for every parameter (`*`)
        # the codes come from skipping through the index (one seek each), so the lookup by target still
        # goes through the (param, target_id, target_type) index
        if include.param == "*":
            head, join = f"WITH RECURSIVE p(param) AS ({_PARAMS}) ", "CROSS JOIN p CROSS JOIN idx_reference e ON " \
                "e.param = p.param AND "
        else:
            head, join = "", "CROSS JOIN idx_reference e ON "
        sql = (f"{head}SELECT s.rid FROM json_each(?) j CROSS JOIN resources t ON t.rid = j.value {join}"
               "e.target_id = t.id AND e.target_type = t.type CROSS JOIN resources s ON s.rid = e.rid")
        conds.append("s.deleted = 0")
        ordering = "s.type, s.id"
    else:
        # what the given `source_type` resources reference through `param`
        sql = ("SELECT t.rid FROM json_each(?) j CROSS JOIN resources s ON s.rid = j.value "
               "CROSS JOIN idx_reference e INDEXED BY idx_reference_rid ON e.rid = s.rid "
               "CROSS JOIN resources t ON t.type = e.target_type AND t.id = e.target_id")
        conds.append("t.deleted = 0")
        ordering = "t.type, t.id"
    if include.param != "*":
        conds.append("e.param = ?")
        args.append(include.param)
    if include.source_type != "*":
        conds.append("s.type = ?")
        args.append(include.source_type)
    if include.target_type is not None:
        conds.append("t.type = ?")
        args.append(include.target_type)
    return f"{sql} WHERE {' AND '.join(conds)} ORDER BY {ordering}", tuple(args)


def reach(conn: sqlite3.Connection) -> Callable[[Sequence[int], Include], Iterable[int]]:
    """The lookup of one include from a set of rids, on `conn`: the rids it brings along (by type and id)."""

    def lookup(frontier: Sequence[int], include: Include) -> Iterable[int]:
        sql, args = _statement(include)
        return [rid for (rid,) in conn.execute(sql, (orjson.dumps(list(frontier)).decode(), *args))]

    return lookup
