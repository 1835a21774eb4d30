"""`Patient/[id]/$everything`, `Patient/$everything` and `Encounter/[id]/$everything`: a compartment and the
resources its members reference, as a searchset Bundle paged by an opaque cursor.

A compartment is walked type by type (its member types in a fixed order, the compartment's own resource first),
each type in the store's default order (creation), so a page ends at a place (type, keyset) the next page starts
after: writes in between do not shift pages. Each type is one search (search/compartments.py clause, narrowed by
the caller's policy like any search) with `_include=Type:*` bringing along what its matches reference; included
resources of the compartment's member types are left out (they come as matches when they belong). The type-level
`Patient/$everything` walks the patients the caller may search, in their default order, one compartment after
the other.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlencode

import orjson

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, Issue, not_found, operation_outcome
from hearth.interactions import crud
from hearth.interactions.bundles import bundle, entry, full_url
from hearth.interactions.context import Context, released
from hearth.interactions import operations
from hearth.interactions.operations.arguments import body_resource, parameters, text
from hearth.interactions.refusals import answered
from hearth.interactions.request import Caller, Outcome, Request
from hearth.interactions.search import parse_query
from hearth.search import paging
from hearth.search.compartments import COMPARTMENTS, compartment_clause
from hearth.search.ir import Keyset, Query
from hearth.storage.base import SearchPage, Version

DEFINITIONS = {"Patient": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
               "Encounter": "http://hl7.org/fhir/OperationDefinition/Encounter-everything"}
_INPUTS = frozenset({"_since", "_type", "_count", "start", "end", "_cursor"})
# a place to resume at: [patient keyset values | None, patient id | None, type index, keyset values in that type | None]
State = list[Any]


def install(ctx: Context) -> None:
    """Register this module's operations on the context."""
    for resource_type, definition in DEFINITIONS.items():
        ctx.operations[(resource_type, "$everything")] = everything
        operations.served(ctx, "everything", definition, resource_type)


def members(compartment_type: str) -> tuple[str, ...]:
    """The compartment's member types, its own type first, then by name."""
    others = sorted(t for t in COMPARTMENTS[compartment_type] if t != compartment_type)
    return (compartment_type, *others) if compartment_type in COMPARTMENTS[compartment_type] else tuple(others)


@dataclass
class Asked:
    """The inputs of one $everything request."""

    count: int
    since: str | None
    start: str | None
    end: str | None
    types: frozenset[str] | None  # `_type`: None for every type
    cursor: str | None
    used: list[tuple[str, str]]  # the inputs that choose the result, for the links
    ignored: list[str]

    @classmethod
    def of(cls, ctx: Context, request: Request) -> Asked:
        inputs = [(name, text(value)) for name, value in parameters(request, body_resource(request))]
        values = dict(inputs)
        count = values.get("_count", str(ctx.default_count))
        if not count.isdigit() or int(count) < 1:
            raise FhirError(400, "invalid", f"_count must be a positive integer, not {count!r}", ("_count",))
        listed = [t for name, value in inputs if name == "_type" for t in value.split(",") if t]
        return cls(min(int(count), ctx.max_count), values.get("_since"), values.get("start"), values.get("end"),
                   frozenset(listed) if listed else None, values.get("_cursor"),
                   [(n, v) for n, v in inputs if n in _INPUTS and n not in ("_cursor", "_count")],
                   sorted({n for n, _ in inputs if n not in _INPUTS}))

    def params(self, ctx: Context, resource_type: str, room: int) -> list[tuple[str, str]]:
        """The search parameters of one member type's part of a page (`room`: matches it may still take)."""
        params = [("_count", str(room)), ("_include", f"{resource_type}:*")]
        if self.since:
            params.append(("_lastUpdated", f"ge{self.since}"))
        if ctx.registry.get(resource_type, "date") is not None:  # the care date ("clinical date") where a type has one
            params += [("date", f"{prefix}{value}") for prefix, value in (("ge", self.start), ("le", self.end))
                       if value]
        return params


@dataclass
class Page:
    """The entries of the page being built."""

    count: int
    members: frozenset[str]
    wanted: frozenset[str] | None
    entries: list[bytes] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    matched: int = 0
    shown: int = 0

    @property
    def room(self) -> int:
        return self.count - self.matched

    def add(self, ctx: Context, request: Request, found: SearchPage) -> None:
        self.matched += len(found.matches)
        self._entries(ctx, released(ctx, request, found.matches), "match")
        referenced = [version for version in found.included if version.type not in self.members
                      and (self.wanted is None or version.type in self.wanted)]
        self._entries(ctx, released(ctx, request, referenced), "include")

    def _entries(self, ctx: Context, versions: list[Version], mode: str) -> None:
        for version in versions:
            key = (version.type, version.id)
            if key not in self.seen:
                self.seen.add(key)
                self.shown += mode == "match"
                self.entries.append(entry(full_url(ctx.base_url, version), version.body, search={"mode": mode}))


async def everything(ctx: Context, request: Request) -> Outcome:
    compartment_type = request.type or ""
    if request.id is None and compartment_type != "Patient":
        raise FhirError(400, "not-supported", f"{compartment_type}/$everything needs a {compartment_type} id")
    asked = Asked.of(ctx, request)
    key = await ctx.store.cursor_key()
    search = _identity(request, asked)
    state: State = _state(asked.cursor, search, key) if asked.cursor else [None, request.id, 0, None]
    page = Page(asked.count, frozenset(members(compartment_type)), asked.types)
    if request.id is not None:
        await _visible(ctx, request, compartment_type, request.id)
        place = await _walk(ctx, request, asked, page, compartment_type, request.id, state[2], state[3])
        following = None if place is None else [None, request.id, *place]
    else:
        following = await _patients(ctx, request, asked, page, state)
    links = [("self", _link(ctx, request, asked, asked.cursor))]
    if following is not None:
        links.append(("next", _link(ctx, request, asked, _encode(following, search, key))))
    if asked.ignored:
        issue = Issue("warning", "not-supported", f"Parameters ignored: {', '.join(asked.ignored)}")
        page.entries.append(entry(None, fhir_json.dumps(operation_outcome([issue])), search={"mode": "outcome"}))
    total = page.shown if asked.cursor is None and following is None else None
    return Outcome(200, body=bundle("searchset", page.entries, total, links))


async def _visible(ctx: Context, request: Request, resource_type: str, resource_id: str) -> None:
    """404 unless the compartment's resource exists and the caller may see it (410 when it was deleted, to
    callers who see everything of the type, as a read answers)."""
    try:
        version = await crud.read(ctx, resource_type, resource_id)
    except FhirError as error:
        if error.status == 410 and not ctx.policy.sees_all(request):
            raise not_found(resource_type, resource_id) from None
        raise
    if ctx.policy.after(request, version) is None:
        raise not_found(resource_type, resource_id)


async def _patients(ctx: Context, request: Request, asked: Asked, page: Page, state: State) -> State | None:
    """Fill `page` from the compartments of the patients the caller may search, from `state` on; where the next
    page starts (None: nothing is left)."""
    after, patient, type_index, inner = state
    while True:
        if patient is None:
            query = parse_query(ctx, ("Patient",), [("_count", "1")], strict=True)
            query = replace(query, after=Keyset(tuple(after), "next") if after is not None else None)
            found = await _search(ctx, request.caller, query)
            if not found.matches:
                return None
            patient, after, type_index, inner = found.matches[0].id, list(found.last or ()), 0, None
        place = await _walk(ctx, request, asked, page, "Patient", patient, type_index, inner)
        if place is not None:
            return [after, patient, *place]
        patient = None
        if page.room <= 0:
            return [after, None, 0, None]


async def _walk(ctx: Context, request: Request, asked: Asked, page: Page, compartment_type: str,
                compartment_id: str, type_index: int, inner: list | None) -> tuple[int, list | None] | None:
    """Fill `page` from one compartment, from member type `type_index` after `inner` (its keyset values) on;
    the place the next page starts at (None: the compartment is done)."""
    types = [t for t in members(compartment_type) if asked.types is None or t in asked.types]
    for index in range(type_index, len(types)):
        resource_type = types[index]
        if page.room <= 0:
            return index, None
        if not _may_search(ctx, request.caller, resource_type):
            continue
        query = parse_query(ctx, (resource_type,), asked.params(ctx, resource_type, page.room), strict=True)
        query = replace(query, where=query.where + (compartment_clause(compartment_type, compartment_id,
                                                                       resource_type),),
                        after=Keyset(tuple(inner), "next") if inner is not None and index == type_index else None)
        found = await _search(ctx, request.caller, query)
        page.add(ctx, request, found)
        if found.more:
            return index, list(found.last or ())
    return None


def _may_search(ctx: Context, caller: Caller, resource_type: str) -> bool:
    """Whether the caller may search the type at all: the types it may not are left out, not refused."""
    try:
        ctx.policy.before(Request("search-type", caller=caller, type=resource_type))
    except FhirError as error:
        if error.status == 403:
            return False
        raise
    return True


async def _search(ctx: Context, caller: Caller, query: Query) -> SearchPage:
    with answered():
        return await ctx.store.search(ctx.policy.restrict(caller, query))


def _identity(request: Request, asked: Asked) -> str:
    """The name of this $everything (what it is of, and the inputs that choose its content), for its cursors."""
    return hashlib.sha256(orjson.dumps(["$everything", request.type, request.id, sorted(asked.used)])).hexdigest()[:16]


def _encode(state: State, search: str, key: bytes) -> str:
    return paging.encode(Keyset((orjson.dumps(state).decode(),), "next"), search, key=key)


def _state(cursor: str, search: str, key: bytes) -> State:
    """The place a cursor of this $everything holds (400 for one of another, or a forged one)."""
    place = paging.decode(cursor, search, key=key)
    try:
        state = orjson.loads(place.values[0])
        after, patient, type_index, inner = state
        if not (isinstance(type_index, int) and (patient is None or isinstance(patient, str))
                and all(value is None or isinstance(value, list) for value in (after, inner))):
            raise ValueError("bad shape")
    except (ValueError, TypeError, IndexError, orjson.JSONDecodeError):
        raise FhirError(400, "invalid", "The paging cursor is invalid", ("_cursor",)) from None
    return state


def _link(ctx: Context, request: Request, asked: Asked, cursor: str | None) -> str:
    path = "/".join(part for part in (request.type, request.id) if part)
    params = [*asked.used, ("_count", str(asked.count))]
    if cursor:
        params.append(("_cursor", cursor))
    return f"{ctx.base_url}/{path}/$everything?{urlencode(params)}"
