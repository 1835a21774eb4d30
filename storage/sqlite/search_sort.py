"""Sort keys and keyset paging conditions.

A resource's sort value for a multi-valued parameter is its least value ascending and its greatest
descending (dates: the lower bound ascending, the upper bound descending); a resource without a value has
the lowest one: first ascending, last descending (as on MongoDB, and SQLite's own order for NULL). The resource's
`rid`, the order it was created in, breaks ties (in the direction of the last sort key) and is the order of a search
without `_sort`: a page then comes off an index in that order (every SQLite index ends with the rid), so a first page
of a search matching many resources reads about as many rows as it returns, instead of all of them to sort by id.
`_sort=-_lastUpdated` reads the (type, last_updated) index backwards.

A page after a cursor holds the rows strictly after the cursor's row in this order ("next"), or strictly
before it, read in reverse order and turned around ("prev").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from hearth.search.ir import SortKey
from hearth.storage.sqlite.search_preds import TABLES, joined

# the column a parameter type sorts by: (ascending, descending); all but the reference one lead an index
# after `param`, so a page can be read off that index in order
_COLUMNS = {
    "token": ("code", "code"), "string": ("norm", "norm"), "date": ("lo", "hi"),
    "number": ("value", "value"), "quantity": ("value", "value"), "uri": ("value", "value"),
    "reference": ("coalesce(e.url, e.target_type || '/' || e.target_id)",) * 2,
}
_RESOURCE_COLUMNS = {"_id": "id", "_lastUpdated": "last_updated"}


@dataclass(frozen=True, slots=True)
class Key:
    expr: str
    args: tuple
    descending: bool
    nullable: bool
    table: str | None = None  # for a parameter whose index can be walked in sort order: its table, column
    column: str | None = None


def sort_keys(sort: Sequence[SortKey], alias: str) -> list[Key]:
    """The full ordering of a search: its sort keys, then the rid (creation order) as the tie-break."""
    keys = [_key(key, alias) for key in sort]
    last = keys[-1].descending if keys else False
    keys.append(Key(f"{alias}.rid", (), last, False))
    return keys


def _key(key: SortKey, alias: str) -> Key:
    column = _RESOURCE_COLUMNS.get(key.param)
    if column is not None:
        return Key(f"{alias}.{column}", (), key.descending, False)
    columns = _COLUMNS[key.param_type]  # the parser takes no other type's sort (search/parse.py)
    table = TABLES[key.param_type]
    function, column = ("max", columns[1]) if key.descending else ("min", columns[0])
    walkable = column.isidentifier()
    return Key(f"(SELECT {function}({'e.' + column if walkable else column}) FROM {table} e INDEXED BY {table}_rid "
               f"WHERE e.rid = {alias}.rid AND e.param = ?)", (key.param,), key.descending, True,
               table if walkable else None, column if walkable else None)


def index_ordered(keys: Sequence[Key], types: Sequence[str]) -> bool:
    """Whether one type's rows can come off an index in this order ((type) or (type, last_updated), then rid)."""
    return (len(types) == 1 and all(not k.nullable and not k.args for k in keys)
            and len({k.descending for k in keys}) == 1)


def order_by(keys: Sequence[Key], columns: Sequence[str], reverse: bool) -> str:
    return ", ".join(f"{column} {'DESC' if key.descending != reverse else 'ASC'}"
                     for key, column in zip(keys, columns))


def after(keys: Sequence[Key], columns: Sequence[str], values: Sequence[Any], reverse: bool) -> tuple[str, tuple]:
    """Rows strictly after `values` in the order (`reverse`: strictly before it)."""
    if all(not k.nullable for k in keys) and len({k.descending for k in keys}) == 1:
        # a row value comparison, which SQLite can answer with an index range
        op = "<" if keys[0].descending != reverse else ">"
        return f"({', '.join(columns)}) {op} ({', '.join('?' * len(columns))})", tuple(values)
    disjuncts: list[str] = []
    args: list[Any] = []
    equal: list[tuple[str, tuple]] = []
    for key, column, value in zip(keys, columns, values):
        descending = key.descending != reverse  # NULL is the lowest value: it comes after every value descending
        if value is None:
            beyond = None if descending else (f"{column} IS NOT NULL", ())
            same = (f"{column} IS NULL", ())
        else:
            op = "<" if descending else ">"
            tail = f" OR {column} IS NULL" if key.nullable and descending else ""
            beyond = (f"({column} {op} ?{tail})", (value,))
            same = (f"{column} = ?", (value,))
        if beyond is not None:
            disjuncts.append(joined(" AND ", [sql for sql, _ in equal] + [beyond[0]]))
            args.extend(a for _, part in [*equal, beyond] for a in part)
        equal.append(same)
    if not disjuncts:
        return "0", ()
    return "(" + joined(" OR ", [f"({d})" for d in disjuncts]) + ")", tuple(args)
