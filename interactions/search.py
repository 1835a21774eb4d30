"""search: type, system and compartment search, answered with a `searchset` Bundle of stored bytes."""

from __future__ import annotations

from dataclasses import replace
from typing import Awaitable, Callable
from urllib.parse import urlencode

from hearth.capability import fhir_json
from hearth.capability.outcome import Issue, operation_outcome
from hearth.capability.summary import check_summary, subset
from hearth.capability.terminology import default_terminology
from hearth.search import paging
from hearth.search.compartments import compartment_clause
from hearth.search.ir import Clause, Query
from hearth.search.parse import parse_search
from hearth.interactions.bundles import bundle, entry, full_url
from hearth.interactions.context import Context, released
from hearth.interactions.refusals import answered
from hearth.interactions.request import Caller, Request
from hearth.interactions.resources import check_id, check_type
from hearth.storage.base import Version


async def search(ctx: Context, request: Request, types: tuple[str, ...], params: list[tuple[str, str]], *,
                 strict: bool = False, compartment: tuple[str, str] | None = None) -> bytes:
    """Search `types` (empty: every type, or those `_type` names) with the request's `params`, matching and
    showing only what the policy lets `request`'s caller see.

    `compartment` (type, id) restricts the search to that compartment (`GET Patient/123/Observation`).
    """
    for resource_type in types:
        check_type(resource_type)
    check_summary(dict(params).get("_summary"))
    query = parse_query(ctx, types, params, strict)
    if compartment is not None:
        compartment_type, compartment_id = compartment
        check_type(compartment_type)
        check_id(compartment_id)
        clauses = tuple(compartment_clause(compartment_type, compartment_id, t) for t in types)
        query = replace(query, where=query.where + clauses)
    path = _path(types, compartment)
    key = await ctx.store.cursor_key()
    query = paging.opened(query, key, path)
    with answered():
        page = await ctx.store.search(ctx.policy.restrict(request.caller, query))
    following, preceding = paging.cursors(query, page, key, path)
    links = [("self", _link(ctx, path, query.used, query.cursor))]
    if following:
        links.append(("next", _link(ctx, path, query.used, following)))
    if preceding:
        links.append(("previous", _link(ctx, path, query.used, preceding)))
    entries = [] if query.summary == "count" else [
        *(_entry(ctx, version, "match", query) for version in released(ctx, request, page.matches)),
        *(_entry(ctx, version, "include", query) for version in released(ctx, request, page.included)),
    ]
    issues = [Issue("warning", "not-supported", f"Parameter ignored: {reason}") for reason in query.ignored]
    if page.included_cut:
        issues.append(Issue("warning", "too-costly", f"The included resources were cut at HEARTH_MAX_COUNT "
                                                     f"({query.include_limit}): the rest are left out"))
    if issues:
        entries.append(entry(None, fhir_json.dumps(operation_outcome(issues)), search={"mode": "outcome"}))
    total = page.total
    if total is None and query.cursor is None and following is None and query.summary != "count":
        total = len(page.matches)  # the whole result is on this page: the total is known for free
    return bundle("searchset", entries, total, links)


def parse_query(ctx: Context, types: tuple[str, ...], params: list[tuple[str, str]], strict: bool) -> Query:
    """The IR of a search, with the server's paging limits and terminology."""
    return parse_search(types, params, registry=ctx.registry, strict=strict, default_count=ctx.default_count,
                        max_count=ctx.max_count, base_url=ctx.base_url, terminology=default_terminology(),
                        limits=ctx.limits.search)


def exists_for(ctx: Context, caller: Caller) -> Callable[[tuple[str, ...], tuple[Clause, ...]], Awaitable[bool]]:
    """The resolver of chains and `_has` matched in memory (search/matcher.py): whether a current resource matching
    `where` exists that `caller` may search."""
    async def resolve(types: tuple[str, ...], where: tuple[Clause, ...]) -> bool:
        query = ctx.policy.restrict(caller, Query(types=types, where=where, count=1))
        return bool((await ctx.store.search(query)).matches)
    return resolve


def _entry(ctx: Context, version: Version, mode: str, query: Query) -> bytes:
    body = version.body
    if query.summary in ("true", "text", "data") or query.elements:
        body = fhir_json.dumps(subset(fhir_json.loads(body), query.summary, query.elements))
    return entry(full_url(ctx.base_url, version), body, search={"mode": mode})


def _path(types: tuple[str, ...], compartment: tuple[str, str] | None) -> str:
    if compartment is not None:
        return f"{compartment[0]}/{compartment[1]}/{types[0]}"
    return types[0] if len(types) == 1 else ""


def _link(ctx: Context, path: str, used: tuple[tuple[str, str], ...], cursor: str | None) -> str:
    params = [(name, value) for name, value in used if name != "_cursor"]
    if cursor:
        params.append(("_cursor", cursor))
    query = urlencode(params)
    return f"{ctx.base_url}/{path}" + (f"?{query}" if query else "")
