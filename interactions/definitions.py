"""Resources that configure the server as they are written: SearchParameter (the search registry), ValueSet and
CodeSystem (terminology for `:in`, `:not-in`, `:above`, `:below`).

A SearchParameter Hearth cannot index is refused before anything is written. Once one is committed it is registered
(extracted from every resource written from then on) and its re-index job is made (interactions/reindex_jobs.py);
the write answers at once, and the parameter becomes searchable when a worker (interactions/reindex_worker.py) has
indexed every resource of its base types for it. At start-up the stored definitions are loaded again, with their
jobs' state; while running, those written through other processes are applied as the change log brings them
(interactions/follower.py), and the resources of a SearchParameter's base types written shortly before that
(possibly by this process, not knowing it yet) are indexed for it again. A deleted or retired SearchParameter is
dropped at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.capability.terminology import default_terminology
from hearth.search.extract import extract
from hearth.interactions import reindex_jobs
from hearth.interactions.context import Context, WriteHook
from hearth.interactions.request import Caller
from hearth.interactions.search import parse_query
from hearth.search.ir import Query
from hearth.search.paging import following
from hearth.search.registry import SearchParam
from hearth.storage.base import Change, Version, Write
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
            old = _body(await ctx.store.vread(write.type, write.id, write.previous) if write.previous else None)
            if write.type == "SearchParameter":
                await _apply_search_parameter(ctx, write.id, write.version_id, resource, old, write.previous)
            else:
                _apply_terminology(write.type, resource, old.get("url") if old else None)
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
            old = _body(await ctx.store.vread(resource_type, resource_id, first.version_id - 1))
            current = await ctx.store.read(resource_type, resource_id)
            resource = _body(current)
            try:
                if resource_type == "SearchParameter":
                    version_id = current.version_id if current is not None else 0
                    await _apply_search_parameter(ctx, resource_id, version_id, resource, old, first.version_id - 1,
                                                  since=first.last_updated - _CATCH_UP)
                else:
                    _apply_terminology(resource_type, resource, old.get("url") if old else None)
            except FhirError as error:
                log.warning("%s/%s written elsewhere not applied: %s", resource_type, resource_id, error.diagnostics)
        if firsts:
            ctx.capability_statement = None


def _body(version: Version | None) -> dict[str, Any] | None:
    return fhir_json.loads(version.body) if version is not None and not version.deleted else None


async def _apply_search_parameter(ctx: Context, resource_id: str, version_id: int, resource: dict[str, Any] | None,
                                  old: dict[str, Any] | None, old_version: int, since: datetime | None = None) -> None:
    """Register SearchParameter/`resource_id` as it is at `version_id` (`resource`; None: deleted), replacing `old`
    (its version `old_version`), with its re-index job's state; unregister it when deleted or retired. `since`: index
    its base types' resources changed since then for it again (written by this process before it knew)."""
    new_url = resource.get("url") if resource is not None and _in_force(resource) else None
    old_url = old.get("url") if old is not None else None
    if old_url and old_url != new_url:
        ctx.registry.unregister(old_url)
    if resource is None or not new_url:
        return
    param = ctx.registry.check(resource)
    previous = None
    if old is not None and _in_force(old) and old_url == new_url:
        previous = (SearchParam.from_resource(old, custom=True), reindex_jobs.job_name(old_url, resource_id,
                                                                                       old_version))
    job = await reindex_jobs.ensure(ctx, param, resource_id, version_id, previous)
    ctx.registry.register(resource, job["name"], reindex_jobs.waiting(job))
    if since is not None:
        for resource_type in reindex_jobs.types_of(param):
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
        await reindex_versions(ctx, page.matches)
        done += len(page.matches)
        query = following(query, page)
    return done


async def reindex_versions(ctx: Context, versions: Iterable[Version]) -> None:
    """Re-extract the index entries of these current versions (a version changed since keeps its own)."""
    items = [(v.type, v.id, v.version_id, extract(fhir_json.loads(v.body), ctx.registry, base_url=ctx.base_url))
             for v in versions]
    if items:
        await ctx.store.reindex(items)


async def load(ctx: Context) -> None:
    """Register the stored SearchParameters (with their re-index jobs' state), ValueSets and CodeSystems (at
    start-up)."""
    await reindex_jobs.records(ctx).open()
    for resource_type in ("CodeSystem", "ValueSet", "SearchParameter"):
        query: Query | None = Query(types=(resource_type,), count=_PAGE)
        while query is not None:
            page = await ctx.store.search(query)
            for version in page.matches:
                resource = fhir_json.loads(version.body)
                try:
                    if resource_type == "SearchParameter":
                        await _apply_search_parameter(ctx, version.id, version.version_id, resource, None, 0)
                    else:
                        _apply_terminology(resource_type, resource, None)
                except FhirError as error:
                    log.warning("stored %s/%s not applied: %s", resource_type, version.id, error.diagnostics)
            query = following(query, page)
