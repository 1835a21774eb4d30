"""`$meta` (system, type, instance), `$meta-add` and `$meta-delete` (instance): the tags, security labels and
profiles in use, and changing a resource's, answered as a Parameters with one Meta (`return`).

R4 does not version these: `$meta-add`/`$meta-delete` rewrite the version's stored body in place (and, for the
current version, its search index: storage/base.py `Store.rewrite`), keeping `meta.versionId` and
`meta.lastUpdated`; no change-log row is written, so `_history` and Subscriptions do not see the change. All three
also work on an earlier version (`Type/id/_history/vid/$meta-add`), as R4 allows. The changes need an update scope
on the resource (the policy admits the rewritten content as it admits an update), and are audited as every
operation is.
"""

from __future__ import annotations

from typing import Any, Callable

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, not_found
from hearth.interactions import crud, operations
from hearth.interactions.context import Context, at_versions, released
from hearth.interactions.operations.arguments import answer, body_resource, parameters
from hearth.interactions.refusals import answered
from hearth.interactions.request import Outcome, Request
from hearth.interactions.resources import index_entries, serialise
from hearth.interactions.search import parse_query
from hearth.search import paging
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.storage.base import Version, VersionConflict, Write

DEFINITIONS = {"$meta": "http://hl7.org/fhir/OperationDefinition/Resource-meta",
               "$meta-add": "http://hl7.org/fhir/OperationDefinition/Resource-meta-add",
               "$meta-delete": "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete"}
_LABELS = ("tag", "security")  # Coding lists, one entry per system|code
_SCAN_LIMIT = 50_000  # resources a type or system $meta reads at most
_RETRIES = 5  # a rewrite racing an update reads the new version and tries again

Meta = dict[str, Any]


def install(ctx: Context) -> None:
    """Register this module's operations on the context."""
    ctx.operations[(None, "$meta")] = meta
    for handler in (meta, meta_add, meta_delete):
        at_versions(handler)
    for resource_type in RESOURCE_TYPES:
        ctx.operations[(resource_type, "$meta")] = meta
        ctx.operations[(resource_type, "$meta-add")] = meta_add
        ctx.operations[(resource_type, "$meta-delete")] = meta_delete
    for name, definition in DEFINITIONS.items():
        operations.served(ctx, name.removeprefix("$"), definition)  # on every type: listed once, at rest.operation


async def meta(ctx: Context, request: Request) -> Outcome:
    if request.id is not None:
        return _returned(_meta_of((await _current(ctx, request))[1]))
    return _returned(await _in_use(ctx, request))


async def meta_add(ctx: Context, request: Request) -> Outcome:
    return await _change(ctx, request, _added)


async def meta_delete(ctx: Context, request: Request) -> Outcome:
    return await _change(ctx, request, _deleted)


# --- reading ------------------------------------------------------------------------------------------------

async def _current(ctx: Context, request: Request) -> tuple[Version, Version]:
    """The version asked for (the current one unless the URL names one) as stored and as the caller may see it
    (masked): 404 when it may not, 410 to those who see every deletion."""
    try:
        if request.version_id is not None:
            version = await crud.vread(ctx, request.type or "", request.id or "", request.version_id)
        else:
            version = await crud.read(ctx, request.type or "", request.id or "")
    except FhirError as error:
        if error.status == 410 and not ctx.policy.sees_all(request):
            raise not_found(request.type or "", request.id or "") from None
        raise
    shown = released(ctx, request, [version])
    if not shown:
        raise not_found(version.type, version.id)
    return version, shown[0]


def _meta_of(version: Version) -> Meta:
    found = fhir_json.loads(version.body, trusted=True).get("meta") or {}
    return {key: found[key] for key in ("profile", "security", "tag") if found.get(key)}


async def _in_use(ctx: Context, request: Request) -> Meta:
    """The profiles, security labels and tags of the resources (of the type, or all) the caller may search."""
    types = (request.type,) if request.type else ()
    union: Meta = {}
    scanned = 0
    for param in ("_profile", "_security", "_tag"):
        query = ctx.policy.restrict(request.caller, parse_query(
            ctx, types, [(f"{param}:missing", "false"), ("_count", str(ctx.max_count))], strict=True))
        while query is not None:
            with answered():
                page = await ctx.store.search(query)
            scanned += len(page.matches)
            if scanned > _SCAN_LIMIT:
                raise FhirError(400, "too-costly", f"$meta would read more than {_SCAN_LIMIT:,} resources: ask "
                                                   "it of one type, or of one resource")
            for version in released(ctx, request, page.matches):
                union = _added(union, _meta_of(version))
            query = paging.following(query, page)
    return union


def _returned(found: Meta) -> Outcome:
    return answer([{"name": "return", "valueMeta": found}])


# --- changing -----------------------------------------------------------------------------------------------

async def _change(ctx: Context, request: Request, change: Callable[[Meta, Meta], Meta]) -> Outcome:
    """Apply `change(meta, asked)` to the version's meta, in place (no new version)."""
    if request.id is None:
        raise FhirError(400, "not-supported", f"{request.operation} is an instance-level operation: "
                                              f"{request.type}/[id]/{request.operation}")
    ctx.policy.before(Request("update", caller=request.caller, type=request.type, id=request.id))
    asked = _asked_meta(request)
    for _ in range(_RETRIES):
        current = (await _current(ctx, request))[0]  # as stored: a masked body must never be written back
        resource = fhir_json.loads(current.body, trusted=True)
        stored = resource.get("meta") or {}
        changed = change(_meta_of(current), asked)
        if changed == _meta_of(current):
            return _returned(changed)
        resource["meta"] = {**{k: v for k, v in stored.items() if k not in ("profile", "security", "tag")},
                            **changed}
        write = Write(current.type, current.id, current.version_id, current.last_updated, serialise(resource),
                      index_entries(ctx, resource), current.version_id, "update")
        await ctx.policy.admit(request.caller, [write])
        try:
            with answered():  # e.g. a document past the backend's size limit: 413
                await ctx.store.rewrite(write)
        except VersionConflict:
            continue
        released(ctx, request, [crud.written(write)])
        return _returned(changed)
    raise FhirError(409, "conflict", f"{request.type}/{request.id} is being updated concurrently; try again")


def _asked_meta(request: Request) -> Meta:
    """The Meta of the request's Parameters (`meta`); 400 without one."""
    found = dict(parameters(request, body_resource(request))).get("meta")
    if not isinstance(found, dict):
        raise FhirError(400, "required", f"{request.operation} takes a Parameters body with a `meta` parameter "
                                         "(valueMeta)")
    for key in _LABELS:
        if not all(isinstance(coding, dict) for coding in found.get(key) or ()):
            raise FhirError(400, "invalid", f"meta.{key} holds Codings", (f"meta.{key}",))
    if not all(isinstance(url, str) for url in found.get("profile") or ()):
        raise FhirError(400, "invalid", "meta.profile holds canonical URLs", ("meta.profile",))
    return found


def _key(coding: dict[str, Any]) -> tuple[Any, Any]:
    return coding.get("system"), coding.get("code")


def _added(current: Meta, asked: Meta) -> Meta:
    """`current` with what `asked` holds that it does not (codings by system|code, profiles by URL)."""
    result: Meta = {}
    for key in ("profile", "security", "tag"):
        items = list(current.get(key) or ())
        known = {_key(item) if key in _LABELS else item for item in items}
        for item in asked.get(key) or ():
            identity = _key(item) if key in _LABELS else item
            if identity not in known:
                known.add(identity)
                items.append(item)
        if items:
            result[key] = items
    return result


def _deleted(current: Meta, asked: Meta) -> Meta:
    """`current` without what `asked` names (codings by system|code, profiles by URL)."""
    result: Meta = {}
    for key in ("profile", "security", "tag"):
        gone = {_key(item) if key in _LABELS else item for item in asked.get(key) or ()}
        items = [item for item in current.get(key) or () if (_key(item) if key in _LABELS else item) not in gone]
        if items:
            result[key] = items
    return result
