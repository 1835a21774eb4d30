"""The in-memory matcher: the search IR evaluated against one resource's index entries.

This is the reference evaluation of the IR (search/ir.py), which carries each predicate's whole meaning; every
storage backend translates the same IR. A `where` is an AND of Clauses; a Clause is an OR of predicates over the
entries of its `param`; a value predicate holds when some entry passes its type's test (search/params/), a negated
token predicate and `:missing=true` when none does. Chains and `_has` need a resolver (see `Resolver`);
AnyOfPred holds when any of its clauses does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator, Sequence
from functools import lru_cache
from typing import Any

from hearth.search.entries import Entry, TokenEntry
from hearth.search.ir import AnyOfPred, ChainPred, Clause, HasPred, MissingPred, ReferencePred, TokenPred
from hearth.search.params import entry_test, token

Resolver = Callable[[tuple[str, ...], tuple[Clause, ...]], "bool | Awaitable[bool]"]
"""`resolver(types, where)`: does any current resource of one of `types` match `where`? Sync or async.

A chain `subject:Patient.name=peter` asks `(("Patient",), (_id in the referenced ids, name=peter))`;
`_has:Observation:patient:code=x` asks `(("Observation",), (patient=<this resource>, code=x))`. A store
answers with a search limited to one row; nested chains inside `where` are the resolver's to evaluate.
"""

_Request = tuple[tuple[str, ...], tuple[Clause, ...]]
_Remote = Generator[_Request, bool, bool]


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
        """The keys of the parameter's token entries (search/params/token.py entry_keys)."""
        keys = self.token_cache.get(param)
        if keys is None:
            found = set()
            for entry in self.by_param.get(param, ()):
                found.update(token.entry_keys(entry))
            keys = self.token_cache[param] = frozenset(found)
        return keys


def prepare(entries: Sequence[Entry], resource_type: str | None = None, resource_id: str | None = None) -> Prepared:
    return Prepared(entries, resource_type, resource_id)


# --- clauses --------------------------------------------------------------------------------------

_Local = Callable[[Prepared], bool]


def _local_pred(param: str, pred: Any) -> _Local:
    if isinstance(pred, MissingPred):
        if pred.missing:
            return lambda p: not p.get(param)
        return lambda p: bool(p.get(param))
    if isinstance(pred, TokenPred):  # against the resource's keys, computed once per parameter
        keys = frozenset(pred.keys)
        if pred.negated:
            return lambda p: (p.token_cache.get(param) or p.token_keys(param)).isdisjoint(keys)
        return lambda p: not (p.token_cache.get(param) or p.token_keys(param)).isdisjoint(keys)
    if isinstance(pred, AnyOfPred):
        checks = tuple(_local_clause(clause) for clause in pred.clauses)
        return lambda p: any(check(p) for check in checks)
    test = entry_test(pred)
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
        by_id = Clause("_id", "token", tuple(token.code(None, target_id) for target_id in target_ids))
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
