"""Resources that configure the server as they are written: SearchParameter (the search registry), ValueSet and
CodeSystem (terminology for `:in`, `:not-in`, `:above`, `:below`).

A SearchParameter Hearth cannot index is refused before anything is written. Once one is committed, existing
resources of its base types are re-indexed before the write returns, so a search with it is complete at once.
At start-up the stored definitions are loaded again; while running, those written through other processes are
applied as the change log brings them (interactions/follower.py), and the resources of a SearchParameter's base
types written shortly before that (possibly by this process, not knowing it yet) are indexed for it again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Sequence

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.capability.terminology import default_terminology
from hearth.search.extract import extract
from hearth.interactions.context import Context, WriteHook
from hearth.interactions.request import Caller
from hearth.interactions.search import parse_query
from hearth.search.ir import Query
from hearth.search.paging import following
from hearth.storage.base import Change, Write
from hearth.storage.clock import to_instant

log = logging.getLogger("hearth.definitions")

DEFINITION_TYPES = frozenset({"SearchParameter", "ValueSet", "CodeSystem"})
_PAGE = 500
# how far before a SearchParameter's change another process re-indexes its base types: a resource stamped that
# long before the change may be committed after it, extracted without the parameter
_CATCH_UP = timedelta(seconds=5)


def _in_force(resource: dict[str, Any]) -> bool:
    return resource.get("status") != "retired"


class Definitions(WriteHook):
    """The write hook keeping the registry and terminology in line with the definitions stored."""

    types = DEFINITION_TYPES

    def __init__(self) -> None:
        self._own: set[int] = set()  # change seqs of this process's definition writes: applied when committed

    def prepare(self, ctx: Context, caller: Caller, resource_type: str, resource: dict[str, Any],
                previous: int) -> dict[str, Any]:
        """Refuse (FhirError 400) a SearchParameter the registry could not index."""
        if resource_type == "SearchParameter" and _in_force(resource):
            ctx.registry.check(resource)
        return resource

    async def committed(self, ctx: Context, writes: Sequence[Write], changes: Sequence[Change]) -> None:
        """Bring the registry and terminology in line with committed `writes` (creates, updates, deletes)."""
        for write in writes:
            if write.type not in DEFINITION_TYPES:
                continue
            resource = fhir_json.loads(write.body) if write.body is not None else None
            old = await ctx.store.vread(write.type, write.id, write.previous) if write.previous else None
            old_url = fhir_json.loads(old.body).get("url") if old is not None and not old.deleted else None
            if write.type == "SearchParameter":
                await _apply_search_parameter(ctx, resource, old_url)
            else:
                _apply_terminology(write.type, resource, old_url)
        self._own.update(change.seq for change in changes if change.type in DEFINITION_TYPES)
        ctx.capability_statement = None  # it lists the search parameters

    async def observed(self, ctx: Context, changes: Sequence[Change]) -> None:
        """Apply the definitions other processes wrote: each resource's current version, replacing what its
        version before the first of these changes said."""
        firsts: dict[tuple[str, str], Change] = {}
        for change in changes:
            if change.seq in self._own:
                self._own.discard(change.seq)
            else:
                firsts.setdefault((change.type, change.id), change)
        for (resource_type, resource_id), first in firsts.items():
            old = await ctx.store.vread(resource_type, resource_id, first.version_id - 1)
            old_url = fhir_json.loads(old.body).get("url") if old is not None and not old.deleted else None
            current = await ctx.store.read(resource_type, resource_id)
            resource = fhir_json.loads(current.body) if current is not None and not current.deleted else None
            try:
                if resource_type == "SearchParameter":
                    await _apply_search_parameter(ctx, resource, old_url, since=first.last_updated - _CATCH_UP)
                else:
                    _apply_terminology(resource_type, resource, old_url)
            except FhirError as error:
                log.warning("%s/%s written elsewhere not applied: %s", resource_type, resource_id, error.diagnostics)
        if firsts:
            ctx.capability_statement = None


async def _apply_search_parameter(ctx: Context, resource: dict[str, Any] | None, old_url: str | None,
                                  since: datetime | None = None) -> None:
    """Register (or unregister) it, and index its base types for it: every resource, or those changed `since`."""
    new_url = resource.get("url") if resource is not None and _in_force(resource) else None
    if old_url and old_url != new_url:
        ctx.registry.unregister(old_url)
    if new_url:
        param = ctx.registry.register(resource)
        types = RESOURCE_TYPES if {"Resource", "DomainResource"} & set(param.base) else set(param.base)
        for resource_type in sorted(types):
            await reindex(ctx, resource_type, since)


def _apply_terminology(resource_type: str, resource: dict[str, Any] | None, old_url: str | None) -> None:
    terminology = default_terminology()
    if old_url:
        terminology.remove(old_url)
    if resource is not None and resource.get("url"):
        if resource_type == "ValueSet":
            terminology.add_valueset(resource)
        else:
            terminology.add_codesystem(resource)


async def reindex(ctx: Context, resource_type: str, since: datetime | None = None) -> int:
    """Re-extract the index entries of every current resource of `resource_type` (changed `since`, if given);
    returns how many."""
    query: Query | None = Query(types=(resource_type,), count=_PAGE)
    if since is not None:
        query = parse_query(ctx, (resource_type,), [("_lastUpdated", f"ge{to_instant(since)}"),
                                                    ("_count", str(_PAGE))], strict=True)
    done = 0
    while query is not None:
        page = await ctx.store.search(query)
        items = [(v.type, v.id, v.version_id, extract(fhir_json.loads(v.body), ctx.registry, base_url=ctx.base_url))
                 for v in page.matches]
        if items:
            await ctx.store.reindex(items)
        done += len(items)
        query = following(query, page)
    return done


async def load(ctx: Context) -> None:
    """Register the stored SearchParameters, ValueSets and CodeSystems (at start-up)."""
    for resource_type in ("CodeSystem", "ValueSet", "SearchParameter"):
        query: Query | None = Query(types=(resource_type,), count=_PAGE)
        while query is not None:
            page = await ctx.store.search(query)
            for version in page.matches:
                resource = fhir_json.loads(version.body)
                try:
                    if resource_type == "SearchParameter":
                        if _in_force(resource):
                            ctx.registry.register(resource)
                    else:
                        _apply_terminology(resource_type, resource, None)
                except FhirError as error:
                    log.warning("stored %s/%s not applied: %s", resource_type, version.id, error.diagnostics)
            query = following(query, page)
