"""Leaf search predicates (search/ir.py) as SQL conditions on the entries of one index table.

A predicate compiles to a `Cond`: the resource matches when some entry of the clause's parameter satisfies
one of its alternatives (`negated`: when none does). The meaning of each predicate is search/matcher.py's;
the comments name the matcher rule each condition implements. Templates depend only on the predicate's
shape (type, modifier, prefix, which operands are set), so the SQL text repeats and SQLite's statement
cache serves it; only the argument values change.

A clause's values share a handful of templates, so the alternatives of one template with many values are one
alternative over a JSON array of their arguments (`tabled`): the statement is as long for 200 values as for two.
(200 values as 800 alternatives took SQLite 0.4 s to prepare, and 100 such clauses took more variables than it
binds.)
"""

from __future__ import annotations

import itertools
import re
import threading
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import orjson

from search.ir import (Clause, CompositePred, DatePred, MissingPred, NumberPred, QuantityPred, ReferencePred,
                       StringPred, TokenPred, UriPred)
from search.matcher import compile_matcher
from search.normalize import normalize_string
from storage.sqlite.index import decode_components

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


# --- token ----------------------------------------------------------------------------------------

_ANY = None


def _token_keys(pred: TokenPred) -> set[tuple[str | None, str | None]]:
    """The pred's (system, code) keys; system None = any system, "" = no system, code None = any code."""
    if pred.modifier in ("in", "not-in", "above", "below"):
        return set(pred.codes)
    return {(pred.system, pred.code)}


def _token_key_alts(keys: set[tuple[str | None, str | None]]) -> tuple[Alt, ...]:
    """Entries sharing a key with the pred (matcher: (system, code), (ANY, code), (system, ANY))."""
    keys = {k for k in keys if k != (_ANY, _ANY)}  # matches no entry
    if len(keys) == 1:
        ((system, code),) = keys
        return (_and(("1", ()) if code is None else ("e.code = ?", (code,)),
                     ("1", ()) if system is None else _is("e.system", system or None)),)
    any_system = [code for system, code in keys if system is None]
    no_system = [code for system, code in keys if system == "" and code is not None]
    pairs = [[system, code] for system, code in keys if system and code is not None]
    systems = [system for system, code in keys if system and code is None]
    alts: list[Alt] = []
    if any_system:
        alts.append(("e.code IN (SELECT value FROM json_each(?))", (_json(any_system),)))
    if no_system:
        alts.append(("e.code IN (SELECT value FROM json_each(?)) AND e.system IS NULL", (_json(no_system),)))
    if pairs:
        alts.append(("(e.code, e.system) IN (SELECT value ->> 1, value ->> 0 FROM json_each(?))", (_json(pairs),)))
    if systems:
        alts.append(("e.system IN (SELECT value FROM json_each(?))", (_json(systems),)))
    if ("", _ANY) in keys:
        alts.append(("e.system IS NULL", ()))
    return tuple(alts)


def _token(pred: TokenPred) -> Cond:
    if pred.modifier == "text":  # starts-with on the entry's normalised text
        return Cond("idx_token", (starts_with("e.text", pred.code or ""),))
    if pred.modifier == "of-type":  # Identifier type (system, code) and value, all equal
        return Cond("idx_token", (_and(_is("e.code", pred.code), _is("e.type_system", pred.type_system),
                                       _is("e.type_code", pred.type_code)),))
    alts = _token_key_alts(_token_keys(pred))
    return Cond("idx_token", alts, negated=pred.modifier in ("not", "not-in"))


def _id(pred: Any) -> Cond:
    """`_id` on the resource row: the matcher's synthetic entry TokenEntry("_id", None, id)."""
    if isinstance(pred, MissingPred):
        return Cond(RESOURCE, () if pred.missing else (_TRUE,))
    if not isinstance(pred, TokenPred):
        raise ValueError(f"_id cannot take {type(pred).__name__}")
    if pred.modifier == "text":
        return Cond(RESOURCE, ())
    if pred.modifier == "of-type":
        never = pred.type_system is not None or pred.type_code is not None or pred.code is None
        return Cond(RESOURCE, () if never else (("{r}.id = ?", (pred.code,)),))
    keys = _token_keys(pred)
    if ("", _ANY) in keys:
        alts: tuple[Alt, ...] = (_TRUE,)
    else:
        ids = sorted({code for system, code in keys if system in (None, "") and code is not None})
        if len(ids) == 1:
            alts = (("{r}.id = ?", (ids[0],)),)
        else:
            alts = (("{r}.id IN (SELECT value FROM json_each(?))", (_json(ids),)),) if ids else ()
    return Cond(RESOURCE, alts, negated=pred.modifier in ("not", "not-in"))


# --- string, uri ----------------------------------------------------------------------------------

def _string(pred: StringPred) -> Cond:
    if pred.modifier == "exact":
        # an entry's `norm` is normalize_string(`exact`) (search/extract.py), so the norm index finds it
        return Cond("idx_string", (("e.norm = ? AND e.exact = ?", (normalize_string(pred.value), pred.value)),))
    if pred.modifier == "contains":
        return Cond("idx_string", (("instr(e.norm, ?) > 0", (pred.value,)),))
    return Cond("idx_string", (starts_with("e.norm", pred.value),))


def _uri(pred: UriPred) -> Cond:
    if pred.modifier == "above":  # the entry is a prefix of the value: one of the value's prefixes
        prefixes = [pred.value[:i] for i in range(len(pred.value) + 1)]
        return Cond("idx_uri", (("e.value IN (SELECT value FROM json_each(?))", (_json(prefixes),)),))
    if pred.modifier == "below":
        return Cond("idx_uri", (starts_with("e.value", pred.value),))
    return Cond("idx_uri", (("e.value = ?", (pred.value,)),))


# --- date, number, quantity -----------------------------------------------------------------------

# Each prefix as alternatives over the entry range [{lo}, {hi}] against the search range [plo, phi]
# (matcher: eq plo<=tlo and thi<=phi; ge = gt or eq, which is tlo>=plo or thi>phi; le likewise).
_DATE = {
    "eq": (("{lo} >= ? AND {lo} <= ? AND {hi} <= ?", "lo hi hi"),),
    "ne": (("{lo} < ?", "lo"), ("{hi} > ?", "hi")),
    "gt": (("{hi} > ?", "hi"),),
    "lt": (("{lo} < ?", "lo"),),
    "ge": (("{lo} >= ?", "lo"), ("{hi} > ?", "hi")),
    "le": (("{lo} < ?", "lo"), ("{hi} <= ?", "hi")),
    "sa": (("{lo} > ?", "hi"),),
    "eb": (("{hi} < ?", "lo"),),
    "ap": (("{lo} <= ? AND {hi} >= ?", "hi lo"),),
}


def date_alts(pred: DatePred, lo: str, hi: str) -> tuple[Alt, ...]:
    """The date prefix over entry bound columns `lo` and `hi`."""
    bounds = {"lo": pred.lo, "hi": pred.hi}
    return tuple((sql.format(lo=lo, hi=hi), tuple(bounds[name] for name in names.split()))
                 for sql, names in _DATE[pred.prefix])


# Over the entry's value t, with the search value v and its precision range [lo, hi).
_VALUE = {
    "eq": (("e.value >= ? AND e.value < ?", "lo hi"),),
    "ne": (("e.value < ?", "lo"), ("e.value >= ?", "hi")),
    "gt": (("e.value > ?", "value"),),
    "lt": (("e.value < ?", "value"),),
    "ge": (("e.value >= ?", "value"),),
    "le": (("e.value <= ?", "value"),),
    "sa": (("e.value >= ?", "hi"),),
    "eb": (("e.value < ?", "lo"),),
    "ap": (("e.value >= ? AND e.value <= ?", "lo hi"),),
}


def _value_alts(pred: NumberPred | QuantityPred) -> tuple[Alt, ...]:
    bounds = {"value": pred.value, "lo": pred.lo, "hi": pred.hi}
    return tuple((sql, tuple(bounds[name] for name in names.split())) for sql, names in _VALUE[pred.prefix])


def _quantity(pred: QuantityPred) -> Cond:
    system, code = pred.system, pred.code
    if code is None:
        units: tuple[Alt, ...] = (("e.system = ?", (system,)),) if system else (_TRUE,)
    elif system:
        units = (("e.code = ? AND e.system = ?", (code, system)),)
    else:  # `||code`: the entry's code or its unit
        units = (("e.code = ?", (code,)), ("e.unit = ?", (code,)))
    return Cond("idx_quantity", tuple(_and(unit, value) for unit in units for value in _value_alts(pred)))


# --- reference ------------------------------------------------------------------------------------

def _reference(pred: ReferencePred) -> Cond:
    if pred.modifier == "identifier":
        system = pred.identifier_system
        return Cond("idx_reference", (_and(
            ("e.identifier_value IS NOT NULL", ()) if pred.identifier_value is None
            else ("e.identifier_value = ?", (pred.identifier_value,)),
            ("1", ()) if system is None else _is("e.identifier_system", system or None)),))
    if pred.url is not None:
        return Cond("idx_reference", (_and(("e.url = ?", (pred.url,)),
                                           ("1", ()) if pred.version is None else ("e.version = ?", (pred.version,))),))
    typed: Alt = ("1", ()) if pred.target_type is None else ("e.target_type = ?", (pred.target_type,))
    # an entry with a target id is a local reference (an absolute URL or canonical has none: search/extract.py),
    # so only a test for the missing id needs to rule out the URLs; `url IS NULL` would cost a table read per row
    local: Alt = ("e.url IS NULL", ()) if pred.target_id is None else ("1", ())
    return Cond("idx_reference", (_and(_is("e.target_id", pred.target_id), typed, local),))


# --- composite ------------------------------------------------------------------------------------

_checks = threading.local()  # the running query's composite checks; one query at a time per thread
FUNCTION = "hearth_composite"


def composite_function(blob: bytes, param: str, index: int) -> int:
    """The SQL function `hearth_composite(components, param, index)`: check `index` of the running query."""
    return int(_checks.current[index](decode_components(param, blob)))


def set_checks(checks: list[Callable[[Any], bool]]) -> None:
    """Make `checks` the composite checks the SQL function sees on this thread."""
    _checks.current = checks


@lru_cache(maxsize=1024)
def _composite_check(param: str, pred: CompositePred) -> Callable[[Any], bool]:
    matcher = compile_matcher((Clause(param, "composite", (pred,)),))
    return lambda entry: matcher((entry,))


def _composite(param: str, pred: CompositePred, checks: list) -> Cond:
    checks.append(_composite_check(param, pred))
    check: Alt = (f"{FUNCTION}(e.components, e.param, ?)", (len(checks) - 1,))
    first = pred.components[0] if pred.components else None
    if isinstance(first, TokenPred) and first.modifier is None and first.code is not None:
        return Cond("idx_composite", (_and(("e.key = ?", (first.code,)), check),))
    return Cond("idx_composite", (check,))


# --- dispatch -------------------------------------------------------------------------------------

def compile_pred(param: str, param_type: str, pred: Any, checks: list) -> Cond:
    """The Cond of one value predicate of a clause on `param` (composite checks are appended to `checks`)."""
    if param == "_id":
        return _id(pred)
    if isinstance(pred, MissingPred):
        if param == "_lastUpdated":
            return Cond(RESOURCE, () if pred.missing else (_TRUE,))
        return Cond(TABLES[param_type], (_TRUE,), negated=pred.missing)
    if param == "_lastUpdated" and isinstance(pred, DatePred):
        return Cond(RESOURCE, date_alts(pred, "{r}.last_updated", "{r}.last_updated"))
    if isinstance(pred, TokenPred):
        return _token(pred)
    if isinstance(pred, StringPred):
        return _string(pred)
    if isinstance(pred, DatePred):
        return Cond("idx_date", date_alts(pred, "e.lo", "e.hi"))
    if isinstance(pred, NumberPred):
        return Cond("idx_number", _value_alts(pred))
    if isinstance(pred, QuantityPred):
        return _quantity(pred)
    if isinstance(pred, ReferencePred):
        return _reference(pred)
    if isinstance(pred, UriPred):
        return _uri(pred)
    if isinstance(pred, CompositePred):
        return _composite(param, pred, checks)
    raise ValueError(f"unsupported predicate {type(pred).__name__}")
