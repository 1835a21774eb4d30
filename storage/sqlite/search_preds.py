"""Leaf search predicates (search/ir.py) as SQL conditions on the entries of one index table.

A predicate compiles to a `Cond`: the resource matches when some entry of the clause's parameter satisfies
one of its alternatives (`negated`: when none does). The IR carries each predicate's meaning (token keys,
negation, the comparisons a prefix stands for), so this module only translates it: a field of the entry becomes
a column (or, in a composite's component, a field of the stored JSON row). Templates depend only on the
predicate's shape (which keys, which comparisons), so the SQL text repeats and SQLite's statement cache serves
it; only the argument values change.

A clause's values share a handful of templates, so the alternatives of one template with many values are one
alternative over a JSON array of their arguments (`tabled`): the statement is as long for 200 values as for two.
(200 values as 800 alternatives took SQLite 0.4 s to prepare, and 100 such clauses took more variables than it
binds.)
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import orjson

from hearth.search.entries import DateEntry, NumberEntry, QuantityEntry, ReferenceEntry, StringEntry, TokenEntry, UriEntry
from hearth.search.ir import (Bound, CompositePred, DatePred, MissingPred, NumberPred, OfTypePred, QuantityPred, Ranges,
                       ReferencePred, StringPred, TokenKey, TokenPred, TokenTextPred, UriPred)
from hearth.storage.sqlite.index import component_field

TABLES = {"token": "idx_token", "string": "idx_string", "date": "idx_date", "number": "idx_number",
          "quantity": "idx_quantity", "reference": "idx_reference", "uri": "idx_uri", "composite": "idx_composite"}
RESOURCE = ""  # Cond.table for a condition on the resource row itself (`{r}` is its alias)

Alt = tuple[str, tuple]  # (SQL over the entry alias `e`, its arguments)
_TRUE: Alt = ("1", ())


@dataclass(frozen=True, slots=True)
class Cond:
    table: str
    alts: tuple[Alt, ...]  # OR; empty: never
    negated: bool = False


# --- helpers --------------------------------------------------------------------------------------

# Terms joined flat at most. SQLite refuses an expression over 1,000 deep (a flat `a OR b OR …` is as deep as it is
# long) and a compound SELECT of over 500 terms; in groups of this many, nested, 250,000 terms are 3 levels.
_FANOUT = 64


def joined(operator: str, terms: list[str]) -> str:
    """`terms` joined by `operator` (" AND ", " OR "), as nested parenthesised groups when there are many."""
    while len(terms) > _FANOUT:
        terms = [f"({operator.join(terms[i:i + _FANOUT])})" for i in range(0, len(terms), _FANOUT)]
    return operator.join(terms)


def tabled(alts: Sequence[Alt]) -> list[Alt]:
    """`alts` (ORed) with those of one template and several argument rows made one, testing the rows as JSON."""
    return [_tabled(sql, rows) for sql, rows in _grouped(alts).items()]


def tabled_joins(alts: Sequence[Alt]) -> list[tuple[str, str, tuple]]:
    """`alts` as `tabled` makes them, for reading entries through their indexes: (what the entry table is joined
    after, the condition on the entry, the arguments of both). A template with several rows is joined to them, so
    that each row's values bound an index range (an EXISTS over the rows would scan the parameter's every entry)."""
    return [("", *_tabled(sql, rows)) if len(rows) == 1 or _EQUALS.fullmatch(sql)
            else ("json_each(?) v CROSS JOIN ", _of_row(sql), (_rows(rows),)) for sql, rows in _grouped(alts).items()]


def _grouped(alts: Sequence[Alt]) -> dict[str, list[tuple]]:
    groups: dict[str, list[tuple]] = {}
    for sql, args in alts:
        groups.setdefault(sql, []).append(args)
    return groups


def _tabled(sql: str, rows: list[tuple]) -> Alt:
    if len(rows) == 1:
        return sql, rows[0]
    equals = _EQUALS.fullmatch(sql)
    if equals is not None:
        return f"{equals[1]} IN (SELECT value ->> 0 FROM json_each(?))", (_rows(rows),)
    return f"EXISTS (SELECT 1 FROM json_each(?) v WHERE {_of_row(sql)})", (_rows(rows),)


_EQUALS = re.compile(r"([\w.{}]+) = \?")  # a template that is one equality: `column IN (the values)`


def _of_row(sql: str) -> str:
    """A template's `?` placeholders as the fields of the JSON row `v`, in order."""
    fields = itertools.count()
    return re.sub(r"\?", lambda _: f"v.value ->> {next(fields)}", sql)


def _rows(rows: list[tuple]) -> str:
    """Argument rows as a JSON array of arrays; an infinite bound (a number past any double) as the largest double,
    which JSON can carry and compares the same with every finite value."""
    return orjson.dumps([[max(-_LARGEST, min(_LARGEST, a)) if isinstance(a, float) else a for a in row]
                         for row in rows]).decode()


_LARGEST = sys.float_info.max


def union_all(selects: list[str]) -> str:
    """The UNION ALL of SELECTs of one column `rid`, as nested compounds when there are many."""
    while len(selects) > _FANOUT:
        selects = [f"SELECT rid FROM ({' UNION ALL '.join(selects[i:i + _FANOUT])})"
                   for i in range(0, len(selects), _FANOUT)]
    return " UNION ALL ".join(selects)


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with `prefix` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:
            last = 0xE000  # surrogates cannot be stored
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def starts_with(column: str, prefix: str) -> Alt:
    """`column` starts with `prefix`, as an index range (UTF-8 byte order is code point order)."""
    upper = _successor(prefix)
    if upper is None:
        return f"{column} >= ?", (prefix,)
    return f"{column} >= ? AND {column} < ?", (prefix, upper)


def _is(column: str, value: Any) -> Alt:
    return (f"{column} IS NULL", ()) if value is None else (f"{column} = ?", (value,))


def _and(*alts: Alt) -> Alt:
    parts = [sql for sql, _ in alts if sql != "1"]
    return joined(" AND ", parts) or "1", tuple(arg for _, args in alts for arg in args)


def _json(values: Any) -> str:
    return orjson.dumps(list(values)).decode()


# --- the entry's fields -----------------------------------------------------------------------------------------

Column = Callable[[str], str]  # an entry field -> its SQL expression


def _entry_column(field: str) -> str:
    return f"e.{field}"


# --- token ----------------------------------------------------------------------------------------

def _token_key_alts(keys: Sequence[TokenKey], col: Column) -> tuple[Alt, ...]:
    """Entries having one of the keys (search/ir.py TokenKey: system None any, "" none; code None any)."""
    keys = {k for k in keys if k != (None, None)}  # matches no entry
    code, system = col("code"), col("system")
    if len(keys) == 1:
        ((key_system, key_code),) = keys
        return (_and(("1", ()) if key_code is None else (f"{code} = ?", (key_code,)),
                     ("1", ()) if key_system is None else _is(system, key_system or None)),)
    any_system = [c for s, c in keys if s is None]
    no_system = [c for s, c in keys if s == "" and c is not None]
    pairs = [[s, c] for s, c in keys if s and c is not None]
    systems = [s for s, c in keys if s and c is None]
    alts: list[Alt] = []
    if any_system:
        alts.append((f"{code} IN (SELECT value FROM json_each(?))", (_json(any_system),)))
    if no_system:
        alts.append((f"{code} IN (SELECT value FROM json_each(?)) AND {system} IS NULL", (_json(no_system),)))
    if pairs:
        alts.append((f"({code}, {system}) IN (SELECT value ->> 1, value ->> 0 FROM json_each(?))", (_json(pairs),)))
    if systems:
        alts.append((f"{system} IN (SELECT value FROM json_each(?))", (_json(systems),)))
    if ("", None) in keys:
        alts.append((f"{system} IS NULL", ()))
    return tuple(alts)


def _token(pred: TokenPred, col: Column) -> Cond:
    return Cond("idx_token", _token_key_alts(pred.keys, col), negated=pred.negated)


def _token_text(pred: TokenTextPred, col: Column) -> Cond:
    return Cond("idx_token", (starts_with(col("text"), pred.text),))


def _of_type(pred: OfTypePred, col: Column) -> Cond:
    return Cond("idx_token", (_and((f"{col('code')} = ?", (pred.value,)),
                                   (f"{col('type_system')} = ?", (pred.type_system,)),
                                   (f"{col('type_code')} = ?", (pred.type_code,))),))


def _id(pred: Any) -> Cond:
    """`_id` on the resource row: the resource's id as a token without a system."""
    if isinstance(pred, MissingPred):
        return Cond(RESOURCE, () if pred.missing else (_TRUE,))
    if not isinstance(pred, TokenPred):  # `:text`, `:of-type`: an id has neither text nor type
        return Cond(RESOURCE, ())
    if ("", None) in pred.keys:
        alts: tuple[Alt, ...] = (_TRUE,)
    else:
        ids = sorted({code for system, code in pred.keys if system in (None, "") and code is not None})
        if len(ids) == 1:
            alts = (("{r}.id = ?", (ids[0],)),)
        else:
            alts = (("{r}.id IN (SELECT value FROM json_each(?))", (_json(ids),)),) if ids else ()
    return Cond(RESOURCE, alts, negated=pred.negated)


# --- string, uri ----------------------------------------------------------------------------------

def _string(pred: StringPred, col: Column) -> Cond:
    if pred.modifier == "exact":  # `norm` first: the (param, norm) index finds it
        return Cond("idx_string", ((f"{col('norm')} = ? AND {col('exact')} = ?", (pred.norm, pred.exact)),))
    if pred.modifier == "contains":
        return Cond("idx_string", ((f"instr({col('norm')}, ?) > 0", (pred.norm,)),))
    return Cond("idx_string", (starts_with(col("norm"), pred.norm),))


def _uri(pred: UriPred, col: Column) -> Cond:
    value = col("value")
    if pred.below:
        return Cond("idx_uri", tuple(starts_with(value, v) for v in pred.values))
    if len(pred.values) == 1:
        return Cond("idx_uri", ((f"{value} = ?", pred.values),))
    return Cond("idx_uri", ((f"{value} IN (SELECT value FROM json_each(?))", (_json(pred.values),)),))


# --- date, number, quantity -----------------------------------------------------------------------

def range_alts(ranges: Ranges, columns: dict[str, str]) -> tuple[Alt, ...]:
    """The comparisons (an OR of ANDs) over the entry's columns for `lo`, `hi`, `value`."""
    return tuple(_and(*((f"{columns[b.field]} {b.op} ?", (b.operand,)) for b in _hinted(alternative)))
                 for alternative in ranges)


def _hinted(alternative: tuple[Bound, ...]) -> tuple[Bound, ...]:
    """An alternative bounding `lo` from below and `hi` from above (eq: within the search range) also bounds `lo`
    from above, by the same operand (an entry's lo <= its hi): both ends of an index range on (param, lo)."""
    lower = any(b.field == "lo" and b.op in (">", ">=") for b in alternative)
    upper = [b for b in alternative if b.field == "hi" and b.op in ("<", "<=")]
    if not (lower and upper) or any(b.field == "lo" and b.op in ("<", "<=") for b in alternative):
        return alternative
    on_lo = tuple(b for b in alternative if b.field == "lo")
    return (*on_lo, Bound("lo", "<=", upper[0].operand), *(b for b in alternative if b.field != "lo"))


_UNIT_FIELDS = ("system", "code", "unit")


def _quantity(pred: QuantityPred, col: Column) -> Cond:
    units = []
    for alternative in pred.units:  # the code first: the (param, code, value) index
        wanted = dict(zip(_UNIT_FIELDS, alternative))
        units.append(_and(*((f"{col(field)} = ?", (wanted[field],)) for field in ("code", "system", "unit")
                            if wanted[field] is not None)))
    values = range_alts(pred.ranges, {"value": col("value")})
    return Cond("idx_quantity", tuple(_and(unit, value) for unit in units for value in values))


# --- reference ------------------------------------------------------------------------------------

def _reference(pred: ReferencePred, col: Column) -> Cond:
    if pred.modifier == "identifier":
        system = pred.identifier_system
        return Cond("idx_reference", (_and(
            (f"{col('identifier_value')} IS NOT NULL", ()) if pred.identifier_value is None
            else (f"{col('identifier_value')} = ?", (pred.identifier_value,)),
            ("1", ()) if system is None else _is(col("identifier_system"), system or None)),))
    if pred.url is not None:
        return Cond("idx_reference", (_and((f"{col('url')} = ?", (pred.url,)),
                                           ("1", ()) if pred.version is None
                                           else (f"{col('version')} = ?", (pred.version,))),))
    typed: Alt = ("1", ()) if pred.target_type is None else (f"{col('target_type')} = ?", (pred.target_type,))
    # an entry with a target id is a local reference (an absolute URL or canonical has none: search/extract.py),
    # so only a test for the missing id needs to rule out the URLs; `url IS NULL` would cost a table read per row
    local: Alt = (f"{col('url')} IS NULL", ()) if pred.target_id is None else ("1", ())
    return Cond("idx_reference", (_and(_is(col("target_id"), pred.target_id), typed, local),))


# --- composite ------------------------------------------------------------------------------------

_SHAPES = {TokenPred: TokenEntry, TokenTextPred: TokenEntry, OfTypePred: TokenEntry, StringPred: StringEntry,
           DatePred: DateEntry, NumberPred: NumberEntry, QuantityPred: QuantityEntry, ReferencePred: ReferenceEntry,
           UriPred: UriEntry}


def _composite(pred: CompositePred) -> Cond:
    """One stored composite with as many components, each meeting its predicate (its fields read off the JSON
    row: storage/sqlite/index.py); the first component's token code, when fixed, narrows through the index."""
    parts: list[Alt] = []
    first = pred.components[0] if pred.components else None
    if isinstance(first, TokenPred) and first.keys and all(code is not None for _, code in first.keys):
        codes = sorted({code for _, code in first.keys})
        parts.append(("e.key = ?", (codes[0],)) if len(codes) == 1
                     else ("e.key IN (SELECT value FROM json_each(?))", (_json(codes),)))
    parts.append((f"json_array_length(CAST(e.components AS TEXT)) = {len(pred.components)}", ()))
    for position, component in enumerate(pred.components):
        shape = _SHAPES[type(component)]
        cond = _leaf(component, lambda field, n=position, s=shape: component_field(n, s, field))
        if cond.negated:
            raise ValueError("a composite's component cannot be negated")
        if not cond.alts:
            return Cond("idx_composite", ())
        alts = [f"({sql})" for sql, _ in cond.alts]
        parts.append((f"({joined(' OR ', alts)})" if len(alts) > 1 else alts[0],
                      tuple(a for _, args in cond.alts for a in args)))
    return Cond("idx_composite", (_and(*parts),))


# --- dispatch -------------------------------------------------------------------------------------

_LEAVES: dict[type, Callable[[Any, Column], Cond]] = {
    TokenPred: _token, TokenTextPred: _token_text, OfTypePred: _of_type, StringPred: _string,
    DatePred: lambda pred, col: Cond("idx_date", range_alts(pred.ranges, {"lo": col("lo"), "hi": col("hi")})),
    NumberPred: lambda pred, col: Cond("idx_number", range_alts(pred.ranges, {"value": col("value")})),
    QuantityPred: _quantity, ReferencePred: _reference, UriPred: _uri,
}


def _leaf(pred: Any, col: Column) -> Cond:
    return _LEAVES[type(pred)](pred, col)


def compile_pred(param: str, param_type: str, pred: Any) -> Cond:
    """The Cond of one value predicate of a clause on `param`."""
    if param == "_id":
        return _id(pred)
    if isinstance(pred, MissingPred):
        if param == "_lastUpdated":
            return Cond(RESOURCE, () if pred.missing else (_TRUE,))
        return Cond(TABLES[param_type], (_TRUE,), negated=pred.missing)
    if param == "_lastUpdated" and isinstance(pred, DatePred):  # the resource row's one instant: lo = hi
        return Cond(RESOURCE, range_alts(pred.ranges, {"lo": "{r}.last_updated", "hi": "{r}.last_updated"}))
    if isinstance(pred, CompositePred):
        return _composite(pred)
    return _leaf(pred, _entry_column)
