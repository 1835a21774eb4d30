"""Value predicates of the search IR as MongoDB conditions on the typed entry arrays (storage/mongo/documents.py).

The IR carries each predicate's meaning (token keys, negation, the comparisons a prefix stands for): this module
translates it. A value predicate holds when one entry (`$elemMatch`) matches it; a negated one when none does
(`$nor`). Only operators mongomock also supports are used ($elemMatch, $or, $nor, $in, $regex, comparisons,
$exists).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from hearth.search.ir import (Clause, CompositePred, DatePred, NumberPred, OfTypePred, QuantityPred, Ranges,
                              ReferencePred, StringPred, TokenKey, TokenPred, TokenTextPred, UriPred)
from hearth.storage.mongo.documents import ARRAY_OF_TYPE
from hearth.storage.single_dates import lo_range

Condition = dict[str, Any]

NOTHING: Condition = {"_id": {"$in": []}}

_ARRAY_OF_PRED = {TokenPred: "tok", TokenTextPred: "tok", OfTypePred: "tok", StringPred: "str", DatePred: "dt",
                  NumberPred: "num", QuantityPred: "qty", ReferencePred: "ref", UriPred: "uri", CompositePred: "comp"}


def disjunction(conditions: list[Condition]) -> Condition:
    """Any of `conditions` (none: nothing)."""
    if not conditions:
        return NOTHING
    return conditions[0] if len(conditions) == 1 else {"$or": conditions}


def conjunction(*conditions: Condition) -> Condition:
    """The conjunction: fields merge (operator documents too, e.g. `$gte` and `$lte`), the rest goes
    under `$and`."""
    merged: Condition = {}
    rest: list[Condition] = []
    for condition in conditions:
        for key, value in condition.items():
            known = merged.get(key)
            if known is None and key not in merged:
                merged[key] = value
            elif _operators(known) and _operators(value) and not known.keys() & value.keys():
                merged[key] = {**known, **value}
            else:
                rest.append({key: value})
    if rest:
        merged["$and"] = [*merged.get("$and", ()), *rest]
    return merged


def _operators(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(key.startswith("$") for key in value)


def starts_with(text: str) -> dict[str, str]:
    return {"$regex": "^" + _literal(text)}


def _literal(text: str) -> str:
    """`text` as a regular expression matching it; a NUL as `\\x00` (MongoDB refuses a pattern holding a NUL)."""
    return re.escape(text).replace("\x00", "\\x00")


# --- one entry's fields (prefix: "" in an array element, "c0." in a composite component) ---------------

def token_keys(keys: tuple[TokenKey, ...], f: str = "") -> Condition:
    """An entry having one of the keys (system None any, "" none; code None any code of the system)."""
    any_system: list[str] = []
    by_system: dict[str, list[str] | None] = {}  # None: any code of the system
    for system, code in keys:
        if system is None:
            if code is not None:
                any_system.append(code)
        elif code is None:
            by_system[system] = None
        elif by_system.get(system, ()) is not None:
            by_system.setdefault(system, []).append(code)  # type: ignore[union-attr]
    alternatives = [{f + "c": _one_of(any_system)}] if any_system else []
    alternatives += [{f + "s": system or None, **({} if codes is None else {f + "c": _one_of(codes)})}
                     for system, codes in by_system.items()]
    return disjunction(alternatives) if alternatives else {f + "c": {"$in": []}}


def _one_of(values: list[str]) -> Any:
    return values[0] if len(values) == 1 else {"$in": values}


def token(pred: TokenPred, f: str = "") -> Condition:
    return token_keys(pred.keys, f)


def token_text(pred: TokenTextPred, f: str = "") -> Condition:
    return {f + "t": starts_with(pred.text)}


def of_type(pred: OfTypePred, f: str = "") -> Condition:
    return {f + "ts": pred.type_system, f + "tc": pred.type_code, f + "c": pred.value}


def string(pred: StringPred, f: str = "") -> Condition:
    if pred.modifier == "exact":
        return {f + "e": pred.exact}
    if pred.modifier == "contains":
        return {f + "n": {"$regex": _literal(pred.norm)}}
    return {f + "n": starts_with(pred.norm)}


_OPERATORS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}


def ranges(ranges: Ranges, fields: dict[str, str]) -> Condition:
    """The comparisons (an OR of ANDs) over the entry's fields for `lo`, `hi`, `value`."""
    return disjunction([conjunction(*({fields[b.field]: {_OPERATORS[b.op]: b.operand}} for b in alternative))
                        for alternative in ranges])


def date(pred: DatePred, f: str = "") -> Condition:
    return ranges(pred.ranges, {"lo": f + "lo", "hi": f + "hi"})


def number(pred: NumberPred, f: str = "") -> Condition:
    return ranges(pred.ranges, {"value": f + "v"})


_UNIT_FIELDS = ("s", "c", "u")


def quantity(pred: QuantityPred, f: str = "") -> Condition:
    value = ranges(pred.ranges, {"value": f + "v"})
    units = [{f + field: wanted for field, wanted in zip(_UNIT_FIELDS, alternative) if wanted is not None}
             for alternative in pred.units]
    if any(not unit for unit in units):  # any units do
        return value
    return conjunction(value, disjunction(units))


def reference(pred: ReferencePred, f: str = "") -> Condition:
    if pred.modifier == "identifier":
        value: Any = pred.identifier_value
        condition: Condition = {f + "iv": value if value is not None else {"$exists": True}}
        if pred.identifier_system is not None:
            condition[f + "is"] = pred.identifier_system or None
        return condition
    if pred.url is not None:
        condition = {f + "u": pred.url}
        if pred.version is not None:
            condition[f + "v"] = pred.version
        return condition
    if pred.target_type is not None:
        return {f + "r": f"{pred.target_type}/{pred.target_id}"}  # `r` is only set on local references
    return {f + "i": pred.target_id, f + "u": None}


def uri(pred: UriPred, f: str = "") -> Condition:
    if pred.below:
        return disjunction([{f + "v": starts_with(value)} for value in pred.values])
    return {f + "v": _one_of(list(pred.values))}


def composite(pred: CompositePred, f: str = "") -> Condition:
    """All components on one entry, position by position, and no more components than given."""
    size = len(pred.components)
    parts = [entry_condition(component, f"{f}c{n}.") for n, component in enumerate(pred.components)]
    return conjunction(*parts, {f"{f}c{size - 1}": {"$exists": True}, f"{f}c{size}": {"$exists": False}})


_CONDITIONS = {TokenPred: token, TokenTextPred: token_text, OfTypePred: of_type, StringPred: string, DatePred: date,
               NumberPred: number, QuantityPred: quantity, ReferencePred: reference, UriPred: uri,
               CompositePred: composite}


def entry_condition(pred: Any, f: str = "") -> Condition:
    """The condition one entry (fields under prefix `f`) must meet for `pred`, in its positive form."""
    return _CONDITIONS[type(pred)](pred, f)


# --- whole documents ---------------------------------------------------------------------------------

def value_filter(param: str, pred: Any) -> Condition:
    """The document filter of a value predicate on parameter `param`."""
    array = _ARRAY_OF_PRED[type(pred)]
    if isinstance(pred, TokenPred) and pred.negated:
        return {"$nor": [{array: {"$elemMatch": {"p": param, **token_keys(pred.keys)}}}]}
    return {array: {"$elemMatch": conjunction({"p": param}, entry_condition(pred))}}


def single_dates(param: str, clauses: Sequence[Clause]) -> Condition:
    """The clauses (ANDed) on one single-valued date parameter as one entry's condition, its `lo` bounded
    (storage/single_dates.py): one index range on (type, dt.p, dt.lo)."""
    low, high = lo_range(clauses)
    bounds = {op: value for op, value in (("$gte", low), ("$lte", high)) if value is not None}
    parts = [disjunction([date(pred) for pred in clause.preds]) for clause in clauses]
    return {"dt": {"$elemMatch": conjunction({"p": param}, *([{"lo": bounds}] if bounds else []), *parts)}}


def missing_filter(param: str, param_type: str, missing: bool) -> Condition:
    array = ARRAY_OF_TYPE.get(param_type)
    if array is None:
        return NOTHING if missing else {}
    return {f"{array}.p": {"$ne": param} if missing else param}


def id_filter(pred: Any) -> Condition:
    """`_id` on the document's own id (a token without a system; no text, no type)."""
    if not isinstance(pred, TokenPred):
        return NOTHING
    if ("", None) in pred.keys:
        return NOTHING if pred.negated else {}
    ids = sorted({code for system, code in pred.keys if system in (None, "") and code is not None})
    if pred.negated:
        return {"id": {"$nin": ids}}
    return {"id": {"$in": ids}} if len(ids) != 1 else {"id": ids[0]}
