"""Search on SQLite: the query IR (search/ir.py) compiled to SQL over the index tables.

`execute` runs a whole search (one page, its includes, the total) in one read transaction, so every
statement sees the same snapshot; `match_ids` answers a conditional write's assertion on the writer. A page's
key values are its rows' sort values, then the rid (creation order): search_sort.py.
Predicates: search_preds.py; clauses, chains, `_has` and the choice of driving index: search_where.py;
sort and keyset paging: search_sort.py; includes: search_include.py.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from typing import Sequence

import orjson

from hearth.search.ir import AnyOfPred, ChainPred, Clause, HasPred, Query, include_closure
from hearth.storage import clock
from hearth.storage.base import KeysetMismatch, SearchPage, SearchTimedOut, SearchTooNested, Version
from hearth.storage.sqlite.search_include import reach
from hearth.storage.sqlite.search_sort import Key, after, index_ordered, order_by, sort_keys
from hearth.storage.sqlite.search_where import WhereCompiler

_ALIAS = "r0"
_MOST_NESTED = 5  # chain and `_has` levels SQLite's parser takes (HEARTH_SEARCH_MAX_CHAIN_DEPTH at most this)

# VM steps between two looks at the clock while an assertion's search runs in the writer process: no event loop
# competes there for the interpreter lock, so a look costs one Python call (four assertions over the Synthea slice:
# 1.26 ms with the looks, 1.23 ms without, within the noise)
_STEPS = 10_000


def match_ids(conn: sqlite3.Connection, query: Query, timeout: float = 0.0) -> frozenset[str]:
    """Ids of the current, non-deleted resources of `query.types` matching `query.where`; SearchTimedOut past
    `timeout` seconds (0: no limit), SearchTooNested when nested deeper than SQLite compiles (both pickle: this
    runs in the writer process)."""
    end = time.monotonic() + timeout
    if timeout > 0:
        conn.set_progress_handler(lambda: time.monotonic() > end, _STEPS)
    try:
        where, args, _ = WhereCompiler(conn).condition(query.types, query.where, _ALIAS)
        return frozenset(row[0] for row in conn.execute(f"SELECT {_ALIAS}.id FROM resources {_ALIAS} WHERE {where}",
                                                        args))
    except sqlite3.OperationalError as problem:
        if timeout > 0 and time.monotonic() > end:
            raise SearchTimedOut(timeout) from None
        raise _compile_error(problem, query) from None
    finally:
        conn.set_progress_handler(None, 0)


def execute(conn: sqlite3.Connection, query: Query) -> SearchPage:
    """One page of the search, with its includes and (unless `total` is "none") the total."""
    conn.execute("BEGIN")
    try:
        return _execute(conn, query)
    except sqlite3.OperationalError as problem:
        raise _compile_error(problem, query) from None
    finally:
        conn.execute("COMMIT")


def _compile_error(problem: sqlite3.OperationalError, query: Query) -> Exception:
    """SearchTooNested for a search nested deeper than SQLite's parser takes (chains and `_has` nest subqueries:
    past about six levels its stack overflows); any other error as it is."""
    if str(problem) != "parser stack overflow":
        return problem
    return SearchTooNested(_depth(query.where), _MOST_NESTED, "SQLite")


def _depth(where: Sequence[Clause]) -> int:
    """How deep chains and `_has` nest in `where`."""
    return max((1 + _depth(pred.where) if isinstance(pred, (ChainPred, HasPred)) else
                _depth(pred.clauses) if isinstance(pred, AnyOfPred) else 0
                for clause in where for pred in clause.preds), default=0)


def _execute(conn: sqlite3.Connection, query: Query) -> SearchPage:
    compiler = WhereCompiler(conn)
    if query.count == 0:
        return SearchPage([], total=_count(conn, compiler, query))
    keys = sort_keys(query.sort, _ALIAS)
    walk = keys[0].table is not None
    where, where_args, driven = compiler.condition(query.types, query.where, _ALIAS,
                                                   walk or index_ordered(keys, query.types))
    values = None if query.after is None else query.after.values
    if values is not None and len(values) != len(keys):
        raise KeysetMismatch(f"{len(values)} key values for an order of {len(keys)} keys")
    reverse = query.after is not None and query.after.direction == "prev"
    if walk and not driven:
        rows = _walk(conn, keys, where, where_args, values, reverse, query.count + 1)
    else:
        rows = conn.execute(*_page_sql(keys, where, where_args, values, reverse, query.count + 1)).fetchall()
    more = len(rows) > query.count
    rows = rows[:query.count]
    if reverse:
        rows.reverse()
    page = SearchPage(_versions(conn, [row[0] for row in rows]), more=more)
    if rows:
        page.first, page.last = tuple(rows[0][1:]), tuple(rows[-1][1:])
    if query.includes and rows:
        rids, page.included_cut = include_closure([row[0] for row in rows], query.includes, reach(conn),
                                                  query.include_limit)
        page.included = _versions(conn, rids)
    if query.total != "none":
        if values is None and not more:
            page.total = len(rows)  # the first page holds everything
        else:
            page.total = _count(conn, compiler, query)
    return page


def _page_sql(keys: Sequence[Key], where: str, where_args: tuple, values: tuple | None, reverse: bool,
              limit: int) -> tuple[str, tuple]:
    """rid, then each key's value of the page's rows, in page order (reversed for "prev")."""
    columns = [f"k{i}" for i in range(len(keys))]
    selected = ", ".join(f"{key.expr} AS {column}" for key, column in zip(keys, columns))
    inner = f"SELECT {_ALIAS}.rid AS rid, {selected} FROM resources {_ALIAS} WHERE {where}"
    args = (*(a for key in keys for a in key.args), *where_args)
    condition = ""
    if values is not None:
        sql, cursor_args = after(keys, columns, values, reverse)
        condition = f" WHERE {sql}"
        args = (*args, *cursor_args)
    sql = (f"SELECT rid, {', '.join(columns)} FROM ({inner}){condition} "
           f"ORDER BY {order_by(keys, columns, reverse)} LIMIT ?")
    return sql, (*args, limit)


def _walk(conn: sqlite3.Connection, keys: Sequence[Key], where: str, where_args: tuple, values: tuple | None,
          reverse: bool, limit: int) -> list[tuple]:
    """A page read off the first sort key's index in order (no clause being selective): the rows with a
    value walking the index, and the rows without one (the lowest value: before them ascending, after
    them descending)."""
    first = keys[0]
    phases = (True, False) if first.descending != reverse else (False, True)  # True: the rows with a value
    at = None if values is None else values[0] is not None  # the phase the cursor is in
    rows: list[tuple] = []
    for valued in phases:
        if len(rows) >= limit:
            break
        if at is not None and valued != at and phases.index(valued) < phases.index(at):
            continue  # the cursor is past this phase
        cursor = values if valued == at else None
        if valued:
            statement = _walk_sql(keys, where, where_args, cursor, reverse, limit - len(rows))
        else:
            missing = (f"NOT EXISTS (SELECT 1 FROM {first.table} x INDEXED BY {first.table}_rid "
                       f"WHERE x.rid = {_ALIAS}.rid AND x.param = ? AND x.{first.column} IS NOT NULL)")
            statement = _page_sql(keys, f"{where} AND {missing}", (*where_args, *first.args), cursor, reverse,
                                  limit - len(rows))
        rows += conn.execute(*statement).fetchall()
    return rows


def _walk_sql(keys: Sequence[Key], where: str, where_args: tuple, values: tuple | None, reverse: bool,
              limit: int) -> tuple[str, tuple]:
    """The rows with a value for the first key, walking its (param, column) index: each resource once, at
    its entry carrying the sort value (the least ascending, the greatest descending)."""
    first, rest = replace(keys[0], nullable=False), keys[1:]
    table, column = first.table, first.column
    columns = [f"k{i}" for i in range(len(keys))]
    selected = ", ".join([f"e.{column} AS k0", *(f"{key.expr} AS {c}" for key, c in zip(rest, columns[1:]))])
    direction = "DESC" if first.descending else "ASC"
    inner = (f"SELECT {_ALIAS}.rid AS rid, {selected} FROM {table} e "
             f"CROSS JOIN resources {_ALIAS} ON {_ALIAS}.rid = e.rid WHERE e.param = ? AND e.{column} IS NOT NULL "
             f"AND e.rowid = (SELECT x.rowid FROM {table} x INDEXED BY {table}_rid WHERE x.rid = e.rid "
             f"AND x.param = ? AND x.{column} IS NOT NULL ORDER BY x.{column} {direction}, x.rowid LIMIT 1) "
             f"AND {where}")
    args = (*(a for key in rest for a in key.args), *first.args, *first.args, *where_args)
    condition = ""
    if values is not None:
        sql, cursor_args = after([first, *rest], columns, values, reverse)
        bound = "<=" if first.descending != reverse else ">="  # the same, as an index range on k0
        condition = f" WHERE k0 {bound} ? AND {sql}"
        args = (*args, values[0], *cursor_args)
    return (f"SELECT rid, {', '.join(columns)} FROM ({inner}){condition} "
            f"ORDER BY {order_by([first, *rest], columns, reverse)} LIMIT ?", (*args, limit))


def _count(conn: sqlite3.Connection, compiler: WhereCompiler, query: Query) -> int:
    sql, args = compiler.count(query.types, query.where, _ALIAS)
    return conn.execute(sql, args).fetchone()[0]


def _versions(conn: sqlite3.Connection, rids: Sequence[int]) -> list[Version]:
    """The current versions of these resources, in this order."""
    if not rids:
        return []
    rows = conn.execute(
        "SELECT h.type, h.id, h.version_id, h.last_updated, h.deleted, h.body FROM json_each(?) j "
        "CROSS JOIN resources r ON r.rid = j.value "
        "CROSS JOIN history h ON h.type = r.type AND h.id = r.id AND h.version_id = r.version_id "
        "ORDER BY j.key", (orjson.dumps(list(rids)).decode(),))
    return [Version(t, i, v, clock.from_text(u), bool(d), bytes(b)) for t, i, v, u, d, b in rows]
