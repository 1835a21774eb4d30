"""The one dispatcher: every interaction, from REST, a batch or transaction entry, `hearth import`, Subscriptions'
own reads or a connector, is a `Request` run here.

The policy (interactions/policy.py) is asked before the interaction (it may refuse) and after it (it filters or
masks the resource version that leaves; interactions that answer with Bundles ask it for every entry). Writes
pass the write hooks (interactions/context.py) wherever their versions are built.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from hearth.capability import fhir_json
from hearth.capability.capability_statement import capability_statement
from hearth.capability.outcome import FhirError, not_found
from hearth.capability.summary import check_summary, parse_elements, subset
from hearth.interactions import conditional, crud, history, search, transaction
from hearth.interactions import patch as patching
from hearth.interactions.audit import Noted, noting, stop_noting
from hearth.interactions.context import Context, runs_at_versions
from hearth.interactions.request import WRITES, Outcome, Request
from hearth.interactions.resources import is_large, off_loop
from hearth.storage.base import Version
from hearth.storage.clock import to_instant, utc_now

Handler = Callable[[Context, Request], Awaitable[Outcome]]

_PUBLISHED = to_instant(utc_now())


async def dispatch(ctx: Context, request: Request) -> Outcome:
    """Run `request` for its caller: refused, answered, or answered with what the caller may see; recorded in
    the audit trail either way, before the answer leaves."""
    noted, token = noting()
    try:
        outcome = await _run(ctx, request, noted)
    except FhirError as error:
        await ctx.audit.accessed(request, None, error, noted)
        raise
    finally:
        stop_noting(token)
    await ctx.audit.accessed(request, outcome, None, noted)
    return outcome


async def _run(ctx: Context, request: Request, noted: Noted) -> Outcome:
    ctx.policy.before(request)
    if request.type == "AuditEvent" and request.interaction not in ("batch", "transaction", "capabilities"):
        return await _audit_events(ctx, request)
    try:
        outcome = await _HANDLERS[request.interaction](ctx, request)
    except FhirError as error:
        if error.status == 410 and not ctx.policy.sees_all(request):  # whose it was cannot be told: as if absent
            raise not_found(request.type or "", request.id or "") from None
        raise
    if outcome.version is not None:
        shown = ctx.policy.after(request, outcome.version)
        if shown is None and request.interaction not in WRITES:
            raise not_found(outcome.version.type, outcome.version.id)
        outcome.version = shown
        if shown is not None:
            noted.shown.append(shown)
    return outcome


async def _audit_events(ctx: Context, request: Request) -> Outcome:
    """AuditEvents live in the audit log, append-only: read and searched, never written through the API."""
    if request.interaction in WRITES:
        raise FhirError(405, "not-supported", "AuditEvents are recorded by Hearth and cannot be written, changed or "
                                              "deleted through the API", headers={"Allow": "GET"})
    return await ctx.audit.answer(request)


# --- reading ------------------------------------------------------------------------------------------------

async def _read(ctx: Context, request: Request) -> Outcome:
    version = await crud.read(ctx, request.type or "", request.id or "")
    if _not_modified(request, version):
        return Outcome(304, version)
    return Outcome(200, version, _subset(request, version))


async def _vread(ctx: Context, request: Request) -> Outcome:
    version = await crud.vread(ctx, request.type or "", request.id or "", request.version_id or "")
    return Outcome(200, version, _subset(request, version))


def _not_modified(request: Request, version: Version) -> bool:
    """Conditional read: If-None-Match names the current version, or nothing changed since If-Modified-Since."""
    if request.if_none_match is not None:
        return request.if_none_match == version.version_id
    if request.if_modified_since is not None:
        return version.last_updated.replace(microsecond=0) <= request.if_modified_since
    return False


def _subset(request: Request, version: Version) -> bytes | None:
    """A `_summary` / `_elements` subset of the stored bytes; None when the whole resource is asked for."""
    summary = request.param("_summary")
    check_summary(summary)
    elements = parse_elements(request.param("_elements"))
    if summary in (None, "false") and not elements:
        return None
    return fhir_json.dumps(subset(fhir_json.loads(version.body, trusted=True), summary, elements))


async def _search(ctx: Context, request: Request) -> Outcome:
    types = (request.type,) if request.type else ()
    body = await search.search(ctx, request, types, list(request.params), strict=request.strict,
                               compartment=request.compartment)
    return Outcome(200, body=body)


async def _history(ctx: Context, request: Request) -> Outcome:
    return Outcome(200, body=await history.history(ctx, request, request.type, request.id, list(request.params)))


async def _capabilities(ctx: Context, request: Request) -> Outcome:
    """The CapabilityStatement, built once (until the definitions it lists change)."""
    if ctx.capability_statement is None:
        statement = capability_statement(
            ctx.base_url, _PUBLISHED, ctx.registry, transactions=ctx.store.supports_transactions,
            conditional_delete_multiple=ctx.conditional_delete_multiple,
            subscription_topics=ctx.capability_extras.get("subscription_topics", ()),
            security=ctx.capability_extras.get("security"),
            operations=ctx.capability_extras.get("operations", ()),
            instantiates=ctx.capability_extras.get("instantiates", ()))
        ctx.capability_statement = fhir_json.dumps(statement)
    return Outcome(200, body=ctx.capability_statement)


async def _operation(ctx: Context, request: Request) -> Outcome:
    operation = ctx.operations.get((request.type, request.operation or ""))
    if operation is None:  # a 404 would read as "that resource does not exist" to client libraries
        where = f" on {request.type}" if request.type else ""
        raise FhirError(400, "not-supported", f"The operation {request.operation} is not supported{where}")
    if request.version_id is not None and not runs_at_versions(operation):
        raise FhirError(400, "not-supported", f"The operation {request.operation} is not supported on a version")
    return await operation(ctx, request)


# --- writing ------------------------------------------------------------------------------------------------

async def _create(ctx: Context, request: Request) -> Outcome:
    return Outcome(201, await crud.create(ctx, request.caller, request.type or "", _body(request), request.large))


async def _conditional_create(ctx: Context, request: Request) -> Outcome:
    version, created = await conditional.create(ctx, request.caller, request.type or "", _body(request),
                                                request.criteria, request.large)
    return Outcome(201 if created else 200, version)


async def _update(ctx: Context, request: Request) -> Outcome:
    version, created, unchanged = await crud.update(ctx, request.caller, request.type or "", request.id or "",
                                                    _body(request), request.if_match, request.large,
                                                    request.keep_unchanged)
    return Outcome(201 if created else 200, version, unchanged=unchanged)


async def _conditional_update(ctx: Context, request: Request) -> Outcome:
    version, created = await conditional.update(ctx, request.caller, request.type or "", request.criteria,
                                                _body(request), request.if_match, request.large)
    return Outcome(201 if created else 200, version)


async def _patch(ctx: Context, request: Request) -> Outcome:
    patcher = await _patcher(request)
    return Outcome(200, await patching.patch(ctx, request.caller, request.type or "", request.id or "", patcher,
                                             request.if_match))


async def _conditional_patch(ctx: Context, request: Request) -> Outcome:
    patcher = await _patcher(request)
    return Outcome(200, await patching.patch_conditional(ctx, request.caller, request.type or "", request.criteria,
                                                         patcher, request.if_match))


async def _patcher(request: Request) -> patching.Patcher:
    """The request's patch, compiled (a large one on a worker thread)."""
    body = request.body
    if isinstance(body, patching.Patcher):  # a Bundle entry's, compiled when the Bundle was checked
        return body
    return await off_loop(request.large or is_large(_body(request)), patching.compile_patch, _body(request),
                          request.media_type or "application/fhir+json")


async def _delete(ctx: Context, request: Request) -> Outcome:
    return Outcome(204, await crud.delete(ctx, request.caller, request.type or "", request.id or ""))


async def _conditional_delete(ctx: Context, request: Request) -> Outcome:
    deleted = await conditional.delete(ctx, request.caller, request.type or "", request.criteria, ctx.conditional_delete_multiple)
    return Outcome(204, deleted[0] if len(deleted) == 1 else None)


async def _bundle(ctx: Context, request: Request) -> Outcome:
    processed = await transaction.process_bundle(ctx, request, dispatch)
    return Outcome(200, body=processed.body(), entries=processed.results)


def _body(request: Request) -> bytes | dict:
    if request.body is None:
        raise FhirError(400, "required", f"A {request.interaction} needs a body")
    return request.body  # type: ignore[return-value]


_HANDLERS: dict[str, Handler] = {
    "read": _read, "vread": _vread,
    "search-type": _search, "search-system": _search, "search-compartment": _search,
    "history-instance": _history, "history-type": _history, "history-system": _history,
    "capabilities": _capabilities, "operation": _operation,
    "create": _create, "conditional-create": _conditional_create, "update": _update,
    "conditional-update": _conditional_update, "patch": _patch, "conditional-patch": _conditional_patch,
    "delete": _delete, "conditional-delete": _conditional_delete,
    "batch": _bundle, "transaction": _bundle,
}
