"""Conditional create, update, delete: race-safe by asserting, inside the commit, that the condition still
matches exactly what was seen when the decision was made (storage/base.py `Assertion`); on a lost race, redo.

R4 status codes (http://hl7.org/fhir/R4/http.html): create — no match 201, one 200 (nothing written), several
412; update — no match: create (201), one: update it (200), several 412; delete — no match 204 (nothing to
do), one: delete it, several: 412 unless multiple deletes are enabled (`HEARTH_CONDITIONAL_DELETE_MULTIPLE`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

from hearth.capability.outcome import FhirError, invalid
from hearth.capability.terminology import default_terminology
from hearth.search.ir import Query
from hearth.search.parse import parse_search
from hearth.interactions.context import Context
from hearth.interactions.request import Caller
from hearth.interactions.crud import tombstone_write, version_mismatch, write_new, written
from hearth.interactions.resources import check_id, check_type, new_id, parse_body
from hearth.interactions.refusals import answered
from hearth.storage.base import Assertion, AssertionFailed, TransactionsUnsupported, Version, VersionConflict

RETRIES = 20  # each retry means a concurrent writer changed what the condition matches; it settles fast

# Parameters that shape a result page, not which resources match: meaningless in a condition.
_RESULT_PARAMETERS = frozenset({"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total",
                                "_format", "_pretty", "_contained", "_containedType", "_cursor"})


def parse_criteria(ctx: Context, caller: Caller, resource_type: str, criteria: str) -> Query:
    """`identifier=http://x|1&active=true` (a query string without '?') -> the Query the condition means, matching
    only what `caller` may search (a condition never reveals what the caller may not see).

    Conditions are parsed strictly: an unknown parameter would silently widen the match (400 instead)."""
    criteria = criteria.removeprefix(f"{resource_type}?").lstrip("?")  # `Patient?identifier=…` or `identifier=…`
    params = parse_qsl(criteria, keep_blank_values=True)
    if not params:
        raise invalid(f"A conditional {resource_type} interaction needs search criteria")
    for name, _ in params:
        if name in _RESULT_PARAMETERS:
            raise invalid(f"'{name}' cannot be used in a condition", (name,))
    query = parse_search((resource_type,), params, registry=ctx.registry, strict=True,
                         default_count=ctx.default_count, max_count=ctx.max_count, base_url=ctx.base_url,
                         terminology=default_terminology(), limits=ctx.limits.search)
    return ctx.policy.restrict(caller, replace(query, sort=(), includes=(), total="none", summary=None, elements=()))


async def find(ctx: Context, query: Query, limit: int = 2) -> list[Version]:
    """Up to `limit` current resources matching `query` (2 is enough to tell one match from several)."""
    with answered():
        page = await ctx.store.search(replace(query, count=limit, cursor=None, after=None))
    return page.matches[:limit]


async def matches(ctx: Context, query: Query, resource_type: str, criteria: str, what: str,
                  multiple: bool = False) -> list[Version]:
    """The current resources a condition matches: at most one unless `multiple` (else 412 naming `what`),
    and never more than the server's max_count (412: narrow the condition)."""
    found = await find(ctx, query, ctx.max_count + 1 if multiple else 2)
    if len(found) > 1 and not multiple:
        raise several(resource_type, criteria, what)
    if len(found) > ctx.max_count:
        raise FhirError(412, "too-costly", f"{resource_type}?{criteria} matches more than {ctx.max_count} "
                                           "resources; narrow the condition")
    return found


def several(resource_type: str, criteria: str, what: str) -> FhirError:
    return FhirError(412, "multiple-matches",
                     f"The condition {resource_type}?{criteria} matches several resources; {what} needs one")


def lost_race(resource_type: str, criteria: str) -> FhirError:
    return FhirError(409, "conflict", f"{resource_type}?{criteria} keeps changing under concurrent writes; try again")


def ids(versions: list[Version]) -> frozenset[str]:
    return frozenset(version.id for version in versions)


async def create(ctx: Context, caller: Caller, resource_type: str, body: bytes | dict[str, Any], criteria: str,
                 large: bool = False) -> tuple[Version, bool]:
    """Create unless `criteria` match (If-None-Exist). Returns (the new or the matching version, created).
    `large` as for crud.create."""
    check_type(resource_type)
    resource, large = await parse_body(ctx, body, resource_type, large)
    query = parse_criteria(ctx, caller, resource_type, criteria)
    for _ in range(RETRIES):
        found = await matches(ctx, query, resource_type, criteria, "a conditional create")
        if found:
            return found[0], False
        try:
            return await write_new(ctx, caller, resource_type, new_id(), resource, 0, (Assertion(query, frozenset()),),
                                   large), True
        except AssertionFailed:
            continue
    raise lost_race(resource_type, criteria)


async def update(ctx: Context, caller: Caller, resource_type: str, criteria: str, body: bytes | dict[str, Any],
                 if_match: int | None = None, large: bool = False) -> tuple[Version, bool]:
    """`PUT Type?criteria`: update the one match, or create when none matches. Returns (version, created).
    `large` as for crud.create."""
    check_type(resource_type)
    resource, large = await parse_body(ctx, body, resource_type, large)
    body_id = resource.get("id")
    if body_id is not None:
        check_id(body_id)
    query = parse_criteria(ctx, caller, resource_type, criteria)
    for _ in range(RETRIES):
        found = await matches(ctx, query, resource_type, criteria, "a conditional update")
        if found:
            current: Version | None = found[0]
            if body_id is not None and body_id != current.id:
                raise invalid(f"The id in the body ('{body_id}') is not the id of the resource the condition "
                              f"matches ('{current.id}')", (f"{resource_type}.id",))
        else:
            # No match: an update-as-create at the body's id, or a create at a new one.
            current = await ctx.store.read(resource_type, body_id) if body_id else None
        target = current.id if found else (body_id or new_id())
        live = current is not None and not current.deleted
        if if_match is not None and (not live or current.version_id != if_match):
            raise version_mismatch(resource_type, target, if_match, current)
        previous = current.version_id if current else 0
        try:
            version = await write_new(ctx, caller, resource_type, target, resource, previous,
                                      (Assertion(query, ids(found)),), large)
        except VersionConflict as conflict:
            if if_match is not None:
                raise version_mismatch(resource_type, target, if_match, None, conflict.actual) from None
            continue
        except AssertionFailed:
            continue
        return version, not live
    raise lost_race(resource_type, criteria)


async def delete(ctx: Context, caller: Caller, resource_type: str, criteria: str, multiple: bool = False
                 ) -> list[Version]:
    """`DELETE Type?criteria`: the tombstones written (none when nothing matched)."""
    check_type(resource_type)
    query = parse_criteria(ctx, caller, resource_type, criteria)
    for _ in range(RETRIES):
        found = await matches(ctx, query, resource_type, criteria,
                              "a conditional delete (multiple deletes are disabled)", multiple)
        if not found:
            return []
        writes = [tombstone_write(version) for version in found]
        try:
            await ctx.commit(writes, (Assertion(query, ids(found)),), caller)
        except (AssertionFailed, VersionConflict):
            continue
        except TransactionsUnsupported:
            return await _delete_each(ctx, caller, found)
        return [written(write) for write in writes]
    raise lost_race(resource_type, criteria)


async def _delete_each(ctx: Context, caller: Caller, found: list[Version]) -> list[Version]:
    """Without transactions, delete the matches one by one (each a single-document write)."""
    deleted = []
    for version in found:
        write = tombstone_write(version)
        try:
            await ctx.commit([write], (), caller)
        except VersionConflict:  # changed meanwhile: it is someone else's now
            continue
        deleted.append(written(write))
    return deleted
