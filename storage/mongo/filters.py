"""Value predicates of the search IR as MongoDB conditions on the typed entry arrays (storage/mongo/documents.py).

Each predicate means what search/matcher.py says it means: a value predicate holds when one entry
(`$elemMatch`) matches it; `:not` / `:not-in` when none does (`$nor`). Only operators mongomock also
supports are used ($elemMatch, $or, $nor, $in, $regex, comparisons, $exists).
"""

from __future__ import annotations

import re
from typing import Any

from search.ir import CompositePred, DatePred, NumberPred, QuantityPred, ReferencePred, StringPred, TokenPred, UriPred
from storage.mongo.documents import ARRAY_OF_TYPE

Condition = dict[str, Any]

NOTHING: Condition = {"_id": {"$in": []}}

_ARRAY_OF_PRED = {TokenPred: "tok", StringPred: "str", DatePred: "dt", NumberPred: "num", QuantityPred: "qty",
                  ReferencePred: "ref", UriPred: "uri", CompositePred: "comp"}


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

def token_keys(pred: TokenPred, f: str = "") -> Condition:
    """The positive key match of a token pred: system None any, "" none; code None any code."""
    if pred.modifier in ("in", "not-in", "above", "below"):
        any_system = [code for system, code in pred.codes if system is None]
        by_system: dict[str, list[str]] = {}
        for system, code in pred.codes:
            if system is not None:
                by_system.setdefault(system, []).append(code)
        alternatives = [{f + "c": {"$in": any_system}}] if any_system else []
        alternatives += [{f + "s": system or None, f + "c": {"$in": codes}} for system, codes in by_system.items()]
        return disjunction(alternatives) if alternatives else {f + "c": {"$in": []}}
    condition: Condition = {}
    if pred.system is not None:
        condition[f + "s"] = pred.system or None
    if pred.code is not None:
        condition[f + "c"] = pred.code
    elif pred.system is None:
        return {f + "c": {"$in": []}}  # neither system nor code: the matcher's keys never meet
    return condition


def token(pred: TokenPred, f: str = "") -> Condition:
    if pred.modifier == "text":
        return {f + "t": starts_with(pred.code or "")}
    if pred.modifier == "of-type":
        return {f + "ts": pred.type_system, f + "tc": pred.type_code, f + "c": pred.code}
    return token_keys(pred, f)


def string(pred: StringPred, f: str = "") -> Condition:
    if pred.modifier == "exact":
        return {f + "e": pred.value}
    if pred.modifier == "contains":
        return {f + "n": {"$regex": _literal(pred.value)}}
    return {f + "n": starts_with(pred.value)}


def date(pred: DatePred, f: str = "", lo: str = "lo", hi: str = "hi") -> Condition:
    """R4 prefixes over ranges: the search range [plo, phi] against the entry's [lo, hi]."""
    plo, phi = pred.lo, pred.hi
    lo, hi = f + lo, f + hi
    within = conjunction({lo: {"$gte": plo}}, {hi: {"$lte": phi}})
    match pred.prefix:
        case "eq":
            return within
        case "ne":
            return {"$or": [{lo: {"$lt": plo}}, {hi: {"$gt": phi}}]}
        case "gt":
            return {hi: {"$gt": phi}}
        case "lt":
            return {lo: {"$lt": plo}}
        case "ge":
            return {"$or": [{hi: {"$gt": phi}}, within]}
        case "le":
            return {"$or": [{lo: {"$lt": plo}}, within]}
        case "sa":
            return {lo: {"$gt": phi}}
        case "eb":
            return {hi: {"$lt": plo}}
        case "ap":
            return conjunction({lo: {"$lte": phi}}, {hi: {"$gte": plo}})
    raise ValueError(f"unknown prefix {pred.prefix!r}")


def _value(pred: NumberPred | QuantityPred, field: str) -> Condition:
    """The entry's value against the search value and its precision range [lo, hi)."""
    value, lo, hi = pred.value, pred.lo, pred.hi
    bounds = {"eq": {"$gte": lo, "$lt": hi}, "gt": {"$gt": value}, "lt": {"$lt": value}, "ge": {"$gte": value},
              "le": {"$lte": value}, "sa": {"$gte": hi}, "eb": {"$lt": lo}, "ap": {"$gte": lo, "$lte": hi}}
    if pred.prefix == "ne":
        return {"$or": [{field: {"$lt": lo}}, {field: {"$gte": hi}}]}
    return {field: bounds[pred.prefix]}


def number(pred: NumberPred, f: str = "") -> Condition:
    return _value(pred, f + "v")


def quantity(pred: QuantityPred, f: str = "") -> Condition:
    value = _value(pred, f + "v")
    system, code = pred.system, pred.code
    if code is None:
        return conjunction(value, {f + "s": system}) if system else value
    if system:
        return conjunction(value, {f + "s": system, f + "c": code})
    return conjunction(value, {"$or": [{f + "c": code}, {f + "u": code}]})


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
    value = pred.value
    if pred.modifier == "above":  # the entry is a prefix of the value
        return {f + "v": {"$in": [value[:n] for n in range(1, len(value) + 1)]}}
    if pred.modifier == "below":
        return {f + "v": starts_with(value)}
    return {f + "v": value}


def composite(pred: CompositePred, f: str = "") -> Condition:
    """All components on one entry, position by position, and no more components than given."""
    size = len(pred.components)
    parts = [entry_condition(component, f"{f}c{n}.") for n, component in enumerate(pred.components)]
    return conjunction(*parts, {f"{f}c{size - 1}": {"$exists": True}, f"{f}c{size}": {"$exists": False}})


_CONDITIONS = {TokenPred: token, StringPred: string, DatePred: date, NumberPred: number, QuantityPred: quantity,
               ReferencePred: reference, UriPred: uri, CompositePred: composite}


def entry_condition(pred: Any, f: str = "") -> Condition:
    """The condition one entry (fields under prefix `f`) must meet for `pred`, in its positive form."""
    return _CONDITIONS[type(pred)](pred, f)


# --- whole documents ---------------------------------------------------------------------------------

def value_filter(param: str, pred: Any) -> Condition:
    """The document filter of a value predicate on parameter `param`."""
    array = _ARRAY_OF_PRED[type(pred)]
    if isinstance(pred, TokenPred) and pred.modifier in ("not", "not-in"):
        return {"$nor": [{array: {"$elemMatch": {"p": param, **token_keys(pred)}}}]}
    return {array: {"$elemMatch": conjunction({"p": param}, entry_condition(pred))}}


def missing_filter(param: str, param_type: str, missing: bool) -> Condition:
    array = ARRAY_OF_TYPE.get(param_type)
    if array is None:
        return NOTHING if missing else {}
    return {f"{array}.p": {"$ne": param} if missing else param}


def id_filter(pred: TokenPred) -> Condition:
    """`_id` on the document's own id (a token without system)."""
    ids = [code for system, code in pred.codes if not system] if pred.codes else \
        [pred.code] if not pred.system and pred.code is not None else []
    if pred.modifier in ("not", "not-in"):
        return {"id": {"$nin": ids}}
    return {"id": {"$in": ids}} if len(ids) != 1 else {"id": ids[0]}

