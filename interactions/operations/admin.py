"""The administrator's operations, for the `admin` role (and anyone while authorization is open), audited like every
operation by the dispatcher:

- `$reindex` (system, type or instance level): re-extracts the search index entries of stored resources from the
  search parameters registered now, without new versions (after a SearchParameter change made outside Hearth's own
  write path, or an upgrade that changed extraction). Runs in batches of 500 resources; answers how many. A
  SearchParameter written through Hearth needs none: its re-index job does it (interactions/reindex_jobs.py).
- `$reindex-status` (system level, GET or POST): the SearchParameter re-index jobs, a `job` parameter each (`url`
  narrows them to one parameter's).
- `$expunge` (system, type or instance level, HAPI's parameters): removes history for good. `expungePreviousVersions`:
  the versions older than the current one; `expungeDeletedResources`: every version of deleted resources, and the
  resources themselves; `limit` (default and most: EXPUNGE_LIMIT) bounds the versions removed per call.
  `expungeEverything` (system level only, in a POST Parameters body, by an authenticated caller) removes all
  resources. Answers Parameters with `count`, the versions removed.

What expunge does to the change log, `_history` and Subscriptions: docs/operations.md.
"""

from __future__ import annotations

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.interactions import reindex_jobs
from hearth.interactions.context import Context
from hearth.interactions.definitions import reindex
from hearth.interactions.operations.arguments import answer, named
from hearth.interactions.request import Outcome, Request
from hearth.interactions.resources import index_entries

EXPUNGE_LIMIT = 10_000  # versions one $expunge call removes at most (each call is one write job on SQLite)


def install(ctx: Context) -> None:
    """Register this module's operations on the context, at system level and on every resource type."""
    from hearth.interactions.operations import served  # (the package imports this module before defining it)
    for resource_type in (None, *sorted(RESOURCE_TYPES)):
        ctx.operations[(resource_type, "$reindex")] = reindex_operation
        ctx.operations[(resource_type, "$expunge")] = expunge_operation
    ctx.operations[(None, "$reindex-status")] = reindex_status
    for name in ("reindex", "reindex-status", "expunge"):  # Hearth's own: the definition names this server
        served(ctx, name, f"{ctx.base_url}/OperationDefinition/{name}")


async def reindex_operation(ctx: Context, request: Request) -> Outcome:
    """`$reindex`: the index entries of the current resources in scope, extracted again."""
    _admin(request)
    if request.id:
        version = await ctx.store.read(request.type or "", request.id)
        if version is None or version.deleted:
            raise FhirError(404, "not-found", f"No current {request.type}/{request.id} to reindex")
        entries = index_entries(ctx, fhir_json.loads(version.body, trusted=True))
        await ctx.store.reindex([(version.type, version.id, version.version_id, entries)])
        return _count(1)
    done = 0
    for resource_type in (request.type,) if request.type else sorted(RESOURCE_TYPES):
        done += await reindex(ctx, resource_type)
    return _count(done)


async def reindex_status(ctx: Context, request: Request) -> Outcome:
    """`$reindex-status`: the re-index jobs (of the parameter `url` names), with their state and progress."""
    _admin(request)
    url = named(request).get("url")
    jobs = await reindex_jobs.records(ctx).list(reindex_jobs.KIND)
    return answer(reindex_jobs.status([job for job in jobs if url in (None, job["url"])]))


async def expunge_operation(ctx: Context, request: Request) -> Outcome:
    """`$expunge`: previous versions and/or deleted resources in scope removed for good (or everything)."""
    _admin(request)
    arguments = named(request)
    if _flag(arguments, "expungeEverything"):
        if request.type is not None:
            raise FhirError(400, "invalid", "expungeEverything is a system-level operation: POST [base]/$expunge")
        if not isinstance(request.body, (bytes, bytearray, dict)) or "expungeEverything" in dict(request.params):
            raise FhirError(400, "invalid", "expungeEverything removes all resources: send it in a POST Parameters "
                                            "body, not in the URL")
        if request.caller.kind == "anonymous":
            raise FhirError(403, "forbidden", "expungeEverything needs an authenticated caller with the admin role")
        return _count(await ctx.store.expunge_everything())
    deleted, previous = _flag(arguments, "expungeDeletedResources"), _flag(arguments, "expungePreviousVersions")
    if not (deleted or previous):
        raise FhirError(400, "required", "Say what to expunge: expungeDeletedResources and/or "
                                         "expungePreviousVersions = true")
    limit = arguments.get("limit", str(EXPUNGE_LIMIT))
    if not limit.isdigit() or not 0 < int(limit) <= EXPUNGE_LIMIT:
        raise FhirError(400, "invalid", f"limit is a whole number from 1 to {EXPUNGE_LIMIT} (the expunge limit)")
    return _count(await ctx.store.expunge(request.type, request.id, deleted=deleted, previous=previous,
                                          limit=int(limit)))


def _admin(request: Request) -> None:
    grant = request.caller.grant
    if grant is not None and "admin" not in grant.roles:
        raise FhirError(403, "forbidden", f"{request.operation} is for the admin role")


def _flag(arguments: dict[str, str], name: str) -> bool:
    value = arguments.get(name, "false")
    if value not in ("true", "false"):
        raise FhirError(400, "invalid", f"{name} is true or false, not '{value[:20]}'")
    return value == "true"


def _count(count: int) -> Outcome:
    return Outcome(200, body=fhir_json.dumps({"resourceType": "Parameters",
                                              "parameter": [{"name": "count", "valueInteger": count}]}))
