"""The in-memory matcher: the search IR evaluated against one resource's index entries.

This module is the reference for what every predicate means; each storage backend implements the same.
A `where` is an AND of Clauses; a Clause is an OR of predicates over the entries of its `param`; a value
predicate holds when some entry matches it (`:not`, `:not-in` and `:missing=true` when none does).

- token: `code` any system; `|code` no system; `system|code`; `system|` any code of the system.
  `:in`/`:above`/`:below` match any of the pred's expanded `codes` ((None, code) = any system);
  `:not`/`:not-in` hold when no entry matches; `:text` is a starts-with on the entry's normalised text;
  `:of-type` needs the Identifier type (system, code) and the value.
- string: starts-with on the normalised form; `:contains` substring of it; `:exact` equality as written.
- date: the search range [plo, phi] against each entry's range [tlo, thi] (R4 search.html#prefix):
  eq plo<=tlo and thi<=phi; ne not eq; gt thi>phi; lt tlo<plo; ge gt or eq; le lt or eq; sa tlo>phi;
  eb thi<plo; ap overlap of the ranges (the parser has already widened an `ap` range by 10% of the gap
  to now).
- number, quantity: the entry's value t against the search value v and its precision range [lo, hi)
  (R4 search.html#number: `100` means [99.5, 100.5), `gt100` greater than exactly 100):
  eq lo<=t<hi; ne not eq; gt t>v; lt t<v; ge t>=v; le t<=v; sa t>=hi; eb t<lo; ap lo<=t<=hi (the parser
  has widened the range by 10% of v). Quantity units: `system|code` both equal; `||code` the entry's code
  or its unit equals code; no units given: any. No unit conversion. A Range entry is compared by its
  `value` (its low end), not by its span: a known simplification.
- reference: a local pred (`url` None) matches local entries of that id (and type, when given); a `url`
  pred matches entries with that absolute URL / canonical (and version, when given); `:identifier`
  matches Reference.identifier like a token.
- uri: equality; `:above` the entry is a prefix of the value; `:below` the value is a prefix of the entry.
- composite: one CompositeEntry whose components match the component predicates, position by position.
- chains and `_has` need a resolver (see `Resolver`); AnyOfPred holds when any of its clauses does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from functools import lru_cache
from typing import Any

from search.entries import CompositeEntry, Entry, TokenEntry
from search.ir import (AnyOfPred, ChainPred, Clause, CompositePred, DatePred, HasPred, MissingPred,
                       NumberPred, QuantityPred, ReferencePred, StringPred, TokenPred, UriPred)

Resolver = Callable[[tuple[str, ...], tuple[Clause, ...]], "bool | Awaitable[bool]"]
"""`resolver(types, where)`: does any current resource of one of `types` match `where`? Sync or async.

A chain `subject:Patient.name=peter` asks `(("Patient",), (_id in the referenced ids, name=peter))`;
`_has:Observation:patient:code=x` asks `(("Observation",), (patient=<this resource>, code=x))`. A store
answers with a search limited to one row; nested chains inside `where` are the resolver's to evaluate.
"""

_Request = tuple[tuple[str, ...], tuple[Clause, ...]]
_Remote = Generator[_Request, bool, bool]
_ANY = None  # wildcard half of a token key


class Prepared:
    """One resource's entries grouped by parameter, with per-parameter token keys computed once and
    shared by every matcher run against this resource (1,000 subscriptions, one write)."""

    __slots__ = ("resource_type", "resource_id", "by_param", "token_cache")

    def __init__(self, entries: Sequence[Entry], resource_type: str | None = None,
                 resource_id: str | None = None) -> None:
        by_param: dict[str, list[Entry]] = {}
        for entry in entries:
            by_param.setdefault(entry.param, []).append(entry)
        if resource_id is not None and "_id" not in by_param:
            by_param["_id"] = [TokenEntry("_id", None, resource_id)]
        self.resource_type = resource_type
        self.resource_id = resource_id
        self.by_param = by_param
        self.token_cache: dict[str, frozenset] = {}

    def get(self, param: str) -> Sequence[Entry]:
        return self.by_param.get(param, ())

    def token_keys(self, param: str) -> frozenset:
        """(system, code), (ANY, code) and (system, ANY) for each token entry; system "" = no system."""
        keys = self.token_cache.get(param)
        if keys is None:
            found = set()
            for entry in self.by_param.get(param, ()):
                found.update(_entry_token_keys(entry))
            keys = self.token_cache[param] = frozenset(found)
        return keys


def _entry_token_keys(entry: TokenEntry) -> tuple:
    system = "" if entry.system is None else entry.system
    if entry.code is None:
        return ((system, _ANY),)
    return (system, entry.code), (_ANY, entry.code), (system, _ANY)


def prepare(entries: Sequence[Entry], resource_type: str | None = None, resource_id: str | None = None) -> Prepared:
    return Prepared(entries, resource_type, resource_id)


# --- single-entry tests ---------------------------------------------------------------------------

def _token_keys(pred: TokenPred) -> frozenset:
    """The keys an entry must share with this (positive form of the) pred."""
    if pred.modifier in ("in", "not-in", "above", "below"):
        return frozenset((_ANY if system is None else system, code) for system, code in pred.codes)
    return frozenset(((_ANY if pred.system is None else pred.system, pred.code),))


def _token_test(pred: TokenPred) -> Callable[[Any], bool]:
    if pred.modifier == "text":
        text = pred.code or ""
        return lambda e: e.text is not None and e.text.startswith(text)
    if pred.modifier == "of-type":
        wanted = (pred.type_system, pred.type_code, pred.code)
        return lambda e: (e.type_system, e.type_code, e.code) == wanted
    keys = _token_keys(pred)
    return lambda e: not keys.isdisjoint(_entry_token_keys(e))


def _string_test(pred: StringPred) -> Callable[[Any], bool]:
    value = pred.value
    if pred.modifier == "exact":
        return lambda e: e.exact == value
    if pred.modifier == "contains":
        return lambda e: value in e.norm
    return lambda e: e.norm.startswith(value)


def _date_test(pred: DatePred) -> Callable[[Any], bool]:
    plo, phi = pred.lo, pred.hi
    tests: dict[str, Callable[[Any], bool]] = {
        "eq": lambda e: plo <= e.lo and e.hi <= phi,
        "ne": lambda e: not (plo <= e.lo and e.hi <= phi),
        "gt": lambda e: e.hi > phi,
        "lt": lambda e: e.lo < plo,
        "ge": lambda e: e.hi > phi or (plo <= e.lo and e.hi <= phi),
        "le": lambda e: e.lo < plo or (plo <= e.lo and e.hi <= phi),
        "sa": lambda e: e.lo > phi,
        "eb": lambda e: e.hi < plo,
        "ap": lambda e: e.lo <= phi and e.hi >= plo,
    }
    return tests[pred.prefix]


def _value_test(pred: NumberPred | QuantityPred) -> Callable[[float], bool]:
    value, lo, hi = pred.value, pred.lo, pred.hi
    tests: dict[str, Callable[[float], bool]] = {
        "eq": lambda t: lo <= t < hi,
        "ne": lambda t: not lo <= t < hi,
        "gt": lambda t: t > value,
        "lt": lambda t: t < value,
        "ge": lambda t: t >= value,
        "le": lambda t: t <= value,
        "sa": lambda t: t >= hi,
        "eb": lambda t: t < lo,
        "ap": lambda t: lo <= t <= hi,
    }
    return tests[pred.prefix]


def _number_test(pred: NumberPred) -> Callable[[Any], bool]:
    test = _value_test(pred)
    return lambda e: test(e.value)


def _quantity_test(pred: QuantityPred) -> Callable[[Any], bool]:
    test = _value_test(pred)
    system, code = pred.system, pred.code
    if code is None and not system:
        return lambda e: test(e.value)
    if code is None:
        return lambda e: e.system == system and test(e.value)
    if system:
        return lambda e: e.system == system and e.code == code and test(e.value)
    return lambda e: (e.code == code or e.unit == code) and test(e.value)


def _reference_test(pred: ReferencePred) -> Callable[[Any], bool]:
    if pred.modifier == "identifier":
        system, value = pred.identifier_system, pred.identifier_value
        wanted_system = None if system == "" else system
        return lambda e: ((value is None or e.identifier_value == value)
                          and (system is None or e.identifier_system == wanted_system)
                          and e.identifier_value is not None)
    if pred.url is not None:
        url, version = pred.url, pred.version
        return lambda e: e.url == url and (version is None or e.version == version)
    rtype, rid = pred.target_type, pred.target_id
    if rtype is None:
        return lambda e: e.url is None and e.target_id == rid
    return lambda e: e.url is None and e.target_id == rid and e.target_type == rtype


def _uri_test(pred: UriPred) -> Callable[[Any], bool]:
    value = pred.value
    if pred.modifier == "above":
        return lambda e: value.startswith(e.value)
    if pred.modifier == "below":
        return lambda e: e.value.startswith(value)
    return lambda e: e.value == value


def _composite_test(pred: CompositePred) -> Callable[[Any], bool]:
    tests = tuple(_entry_test(component) for component in pred.components)
    size = len(tests)
    return lambda e: (isinstance(e, CompositeEntry) and len(e.components) == size
                      and all(test(c) for test, c in zip(tests, e.components)))


_ENTRY_TESTS: dict[type, Callable[[Any], Callable[[Any], bool]]] = {
    TokenPred: _token_test, StringPred: _string_test, DatePred: _date_test, NumberPred: _number_test,
    QuantityPred: _quantity_test, ReferencePred: _reference_test, UriPred: _uri_test,
    CompositePred: _composite_test,
}


def _entry_test(pred: Any) -> Callable[[Any], bool]:
    return _ENTRY_TESTS[type(pred)](pred)


# --- clauses --------------------------------------------------------------------------------------

_Local = Callable[[Prepared], bool]


def _local_pred(param: str, pred: Any) -> _Local:
    if isinstance(pred, MissingPred):
        if pred.missing:
            return lambda p: not p.get(param)
        return lambda p: bool(p.get(param))
    if isinstance(pred, TokenPred) and pred.modifier in (None, "in", "above", "below", "not", "not-in"):
        keys = _token_keys(pred)
        if pred.modifier in ("not", "not-in"):
            return lambda p: (p.token_cache.get(param) or p.token_keys(param)).isdisjoint(keys)
        return lambda p: not (p.token_cache.get(param) or p.token_keys(param)).isdisjoint(keys)
    if isinstance(pred, AnyOfPred):
        checks = tuple(_local_clause(clause) for clause in pred.clauses)
        return lambda p: any(check(p) for check in checks)
    test = _entry_test(pred)
    return lambda p: any(test(e) for e in p.get(param))


def _local_clause(clause: Clause) -> _Local:
    checks = tuple(_local_pred(clause.param, pred) for pred in clause.preds)
    if len(checks) == 1:
        return checks[0]
    return lambda p: any(check(p) for check in checks)


def _is_remote(pred: Any) -> bool:
    if isinstance(pred, AnyOfPred):
        return any(_is_remote(inner) for clause in pred.clauses for inner in clause.preds)
    return isinstance(pred, (ChainPred, HasPred))


def _remote_pred(param: str, pred: Any) -> Callable[[Prepared], _Remote]:
    if isinstance(pred, ChainPred):
        return lambda p: _chain(p, param, pred)
    if isinstance(pred, HasPred):
        return lambda p: _has(p, pred)
    if isinstance(pred, AnyOfPred):
        parts = tuple(_remote_clause(clause) for clause in pred.clauses)
        return lambda p: _any_remote(p, parts)
    local = _local_pred(param, pred)

    def evaluate(p: Prepared) -> _Remote:
        return local(p)
        yield  # a generator that never asks: keeps one calling convention

    return evaluate


def _remote_clause(clause: Clause) -> Callable[[Prepared], _Remote]:
    parts = tuple(_remote_pred(clause.param, pred) for pred in clause.preds)
    return lambda p: _any_remote(p, parts)


def _any_remote(prepared: Prepared, parts: tuple[Callable[[Prepared], _Remote], ...]) -> _Remote:
    for part in parts:
        if (yield from part(prepared)):
            return True
    return False


def _chain(prepared: Prepared, param: str, pred: ChainPred) -> _Remote:
    ids: dict[str, dict[str, None]] = {}
    for entry in prepared.get(param):
        if entry.url is None and entry.target_id and entry.target_type in pred.target_types:
            ids.setdefault(entry.target_type, {})[entry.target_id] = None
    for target_type, target_ids in ids.items():
        by_id = Clause("_id", "token", tuple(TokenPred(None, target_id) for target_id in target_ids))
        if (yield ((target_type,), (by_id, *pred.where))):
            return True
    return False


def _has(prepared: Prepared, pred: HasPred) -> _Remote:
    if prepared.resource_type is None or prepared.resource_id is None:
        raise ValueError("_has needs the resource's type and id")
    back = Clause(pred.source_param, "reference",
                  (ReferencePred(prepared.resource_type, prepared.resource_id),))
    return (yield ((pred.source_type,), (back, *pred.where)))


# --- matchers -------------------------------------------------------------------------------------

class Matcher:
    """A compiled `where`. Call it with a Prepared (or plain entries) and, for chains and `_has`, a
    resolver; `evaluate` is the same for an async resolver."""

    __slots__ = ("where", "_local", "_remote", "_only")

    def __init__(self, where: tuple[Clause, ...]) -> None:
        self.where = where
        is_remote = [any(_is_remote(pred) for pred in clause.preds) for clause in where]
        self._local = tuple(_local_clause(c) for c, remote in zip(where, is_remote) if not remote)
        self._remote = tuple(_remote_clause(c) for c, remote in zip(where, is_remote) if remote)
        # The common subscription case, one local clause, skips the loops.
        self._only = self._local[0] if len(self._local) == 1 and not self._remote else None

    @property
    def needs_resolver(self) -> bool:
        return bool(self._remote)

    def __call__(self, entries: Prepared | Sequence[Entry], *, resource_id: str | None = None,
                 resource_type: str | None = None, resolver: Resolver | None = None) -> bool:
        prepared = entries if type(entries) is Prepared else Prepared(entries, resource_type, resource_id)
        if self._only is not None:
            return self._only(prepared)
        for check in self._local:
            if not check(prepared):
                return False
        for remote in self._remote:
            if not _run_sync(remote(prepared), _require(resolver)):
                return False
        return True

    async def evaluate(self, entries: Prepared | Sequence[Entry], *, resource_id: str | None = None,
                       resource_type: str | None = None, resolver: Resolver | None = None) -> bool:
        prepared = entries if type(entries) is Prepared else Prepared(entries, resource_type, resource_id)
        if not all(check(prepared) for check in self._local):
            return False
        for remote in self._remote:
            if not await _run_async(remote(prepared), _require(resolver)):
                return False
        return True


def _require(resolver: Resolver | None) -> Resolver:
    if resolver is None:
        raise ValueError("this search has chains or _has: matching it needs a resolver")
    return resolver


def _run_sync(process: _Remote, resolver: Resolver) -> bool:
    try:
        request = next(process)
        while True:
            answer = resolver(*request)
            if inspect.isawaitable(answer):
                if inspect.iscoroutine(answer):
                    answer.close()  # never awaited: close it so Python does not warn
                raise TypeError("an async resolver needs Matcher.evaluate / amatches")
            request = process.send(bool(answer))
    except StopIteration as stop:
        return bool(stop.value)


async def _run_async(process: _Remote, resolver: Resolver) -> bool:
    try:
        request = next(process)
        while True:
            answer = resolver(*request)
            if inspect.isawaitable(answer):
                answer = await answer
            request = process.send(bool(answer))
    except StopIteration as stop:
        return bool(stop.value)


@lru_cache(maxsize=4096)
def compile_matcher(where: tuple[Clause, ...]) -> Matcher:
    """The compiled matcher for `where` (cached: the IR is immutable and hashable)."""
    return Matcher(where)


def matches(where: tuple[Clause, ...], entries: Sequence[Entry], *, resource_id: str, resource_type: str,
            resolver: Resolver | None = None) -> bool:
    """Whether the resource with these entries matches `where` (a sync resolver, if any)."""
    return compile_matcher(where)(entries, resource_id=resource_id, resource_type=resource_type, resolver=resolver)


async def amatches(where: tuple[Clause, ...], entries: Sequence[Entry], *, resource_id: str, resource_type: str,
                   resolver: Resolver | None = None) -> bool:
    """`matches` for a sync or async resolver."""
    return await compile_matcher(where).evaluate(entries, resource_id=resource_id, resource_type=resource_type,
                                                 resolver=resolver)
