"""The FHIR REST endpoints: HTTP in, an interaction called, HTTP out."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from capability import fhir_json
from capability.capability_statement import capability_statement
from capability.outcome import FhirError, invalid
from capability.summary import check_summary, parse_elements, subset
from server import http
from interactions import conditional, crud, history as history_interaction, transaction
from interactions import search as search_interaction
from interactions import patch as patching
from interactions.bundles import parse_etag
from interactions.context import Context
from interactions.resources import is_large, off_loop
from storage.base import Version
from storage.clock import to_instant, utc_now
from subscriptions import operations as subscription_operations, service as subscription_service
from subscriptions.topics import topic_summary

_PUBLISHED = to_instant(utc_now())


def _representation(request: Request, version: Version, status: int, headers: dict[str, str]) -> Response:
    """The body `Prefer: return=` asks for after a write: the resource (default), nothing, or an outcome."""
    wanted = http.prefer(request, "return")
    if wanted == "minimal":
        return Response(b"", status, headers)
    if wanted == "OperationOutcome":
        verb = "created" if status == 201 else "updated"
        body = http.outcome_body(f"{version.type}/{version.id} {verb} (version {version.version_id})")
        return http.fhir_response(body, status, headers, http.pretty(request))
    return http.fhir_response(version.body, status, headers, http.pretty(request))


def _resource_body(request: Request, version: Version) -> bytes:
    """Stored bytes, or a `_summary` / `_elements` subset of them."""
    summary = request.query_params.get("_summary")
    check_summary(summary)
    elements = parse_elements(request.query_params.get("_elements"))
    if summary in (None, "false") and not elements:
        return version.body
    return fhir_json.dumps(subset(fhir_json.loads(version.body), summary, elements))


async def metadata(request: Request, ctx: Context) -> Response:
    """The CapabilityStatement, built once (it only changes when the server's capabilities do)."""
    body = ctx.extras.get("capability_statement")
    if body is None:
        statement = capability_statement(
            ctx.base_url, _PUBLISHED, ctx.registry, transactions=ctx.store.supports_transactions,
            conditional_delete_multiple=ctx.extras.get("conditional_delete_multiple", False),
            subscription_topics=topic_summary())
        body = fhir_json.dumps(statement)
        ctx.extras["capability_statement"] = body
    return http.fhir_response(body, pretty_print=http.pretty(request))


async def create(request: Request, ctx: Context, resource_type: str) -> Response:
    """POST [type], conditional with If-None-Exist or search parameters in the URL (a match: 200 and nothing
    written)."""
    body = await _accepted(ctx, resource_type, await http.read_body(request, ctx.extras["max_body_bytes"]))
    criteria = _create_criteria(request)
    if criteria is None:
        version, created = await crud.create(ctx, resource_type, body), True
    else:
        version, created = await conditional.create(ctx, resource_type, body, criteria)
    return _representation(request, version, 201 if created else 200, http.version_headers(version, ctx.base_url))


async def read(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    version = await crud.read(ctx, resource_type, resource_id)
    headers = http.version_headers(version)
    if _not_modified(request, version):
        return Response(b"", 304, headers)
    return http.fhir_response(_resource_body(request, version), 200, headers, http.pretty(request))


def _not_modified(request: Request, version: Version) -> bool:
    """Conditional read: If-None-Match names the current version, or nothing changed since If-Modified-Since."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        return parse_etag(none_match) == version.version_id
    since = request.headers.get("if-modified-since")
    if since is not None:
        moment = http.parse_http_date(since)
        return moment is not None and version.last_updated.replace(microsecond=0) <= moment
    return False


async def vread(request: Request, ctx: Context, resource_type: str, resource_id: str, version_id: str) -> Response:
    version = await crud.vread(ctx, resource_type, resource_id, version_id)
    return http.fhir_response(_resource_body(request, version), 200, http.version_headers(version),
                              http.pretty(request))


async def update(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    body = await _accepted(ctx, resource_type, await http.read_body(request, ctx.extras["max_body_bytes"]))
    version, created = await crud.update(ctx, resource_type, resource_id, body, _if_match(request))
    status = 201 if created else 200
    return _representation(request, version, status, http.version_headers(version, ctx.base_url))


def _if_match(request: Request) -> int | None:
    """The version an If-Match header names (400 for one that is not an ETag)."""
    if_match = request.headers.get("if-match")
    expected = parse_etag(if_match)
    if if_match is not None and expected is None:
        raise invalid(f"Invalid If-Match '{if_match}': expected an ETag like W/\"3\"")
    return expected


def _criteria(request: Request) -> str:
    """The condition of a conditional interaction: the query string, less the formatting parameters."""
    return urlencode(_condition(request.query_params.multi_items()))


def _condition(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in params if name not in ("_format", "_pretty")]


def _create_criteria(request: Request) -> str | None:
    """A create's condition: If-None-Exist, or search parameters in the URL (`POST Patient?identifier=…`, as
    clients like fhirpy send them; ignoring them would create a duplicate each time). 400 when both are given
    and differ."""
    header = request.headers.get("if-none-exist")
    in_url = _condition(request.query_params.multi_items())
    if header is None:
        return urlencode(in_url) if in_url else None
    # the header may be `identifier=…` or `Patient?identifier=…`
    if in_url and sorted(in_url) != sorted(parse_qsl(header.split("?", 1)[-1], keep_blank_values=True)):
        raise invalid("If-None-Exist and the search parameters in the URL give different conditions; send one")
    return header


async def conditional_update(request: Request, ctx: Context, resource_type: str) -> Response:
    body = await http.read_body(request, ctx.extras["max_body_bytes"])
    version, created = await conditional.update(ctx, resource_type, _criteria(request), body, _if_match(request))
    return _representation(request, version, 201 if created else 200, http.version_headers(version, ctx.base_url))


async def conditional_delete(request: Request, ctx: Context, resource_type: str) -> Response:
    deleted = await conditional.delete(ctx, resource_type, _criteria(request),
                                       ctx.extras.get("conditional_delete_multiple", False))
    headers = {"ETag": f'W/"{deleted[0].version_id}"'} if len(deleted) == 1 else {}
    return Response(b"", 204, headers)


async def _patcher(request: Request, ctx: Context) -> patching.Patcher:
    """The request's patch, checked (a large one on a worker thread)."""
    media = http.body_media(request)
    patching.compiler(media)  # 415 for a media type that is no patch format, before the body is read
    body = await http.read_body(request, ctx.limits.max_body_bytes, set(patching.PATCH_TYPES))
    return await off_loop(is_large(body), patching.compile_patch, body, media)


async def patch(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    """PATCH [type]/[id]: JSON Patch, or FHIRPath Patch (a Parameters resource)."""
    patcher = await _patcher(request, ctx)
    version = await patching.patch(ctx, resource_type, resource_id, patcher, _if_match(request))
    return _representation(request, version, 200, http.version_headers(version, ctx.base_url))


async def conditional_patch(request: Request, ctx: Context, resource_type: str) -> Response:
    patcher = await _patcher(request, ctx)
    version = await patching.patch_conditional(ctx, resource_type, _criteria(request), patcher, _if_match(request))
    return _representation(request, version, 200, http.version_headers(version, ctx.base_url))


async def bundle(request: Request, ctx: Context) -> Response:
    """POST [base]: a batch or transaction Bundle."""
    body = await http.read_body(request, ctx.extras["max_body_bytes"])
    processed = await transaction.process_bundle(ctx, body, http.prefer(request, "return"))
    return http.fhir_response(processed.body(), 200, None, http.pretty(request))


async def delete(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    tombstone = await crud.delete(ctx, resource_type, resource_id)
    headers = {"ETag": f'W/"{tombstone.version_id}"'} if tombstone else {}
    return Response(b"", 204, headers)


async def history(request: Request, ctx: Context, resource_type: str | None = None,
                  resource_id: str | None = None) -> Response:
    body = await history_interaction.history(ctx, resource_type, resource_id, request.query_params.multi_items())
    return http.fhir_response(body, 200, None, http.pretty(request))


async def search_type(request: Request, ctx: Context, resource_type: str) -> Response:
    return await _search(request, ctx, (resource_type,), list(request.query_params.multi_items()))


async def search_type_post(request: Request, ctx: Context, resource_type: str) -> Response:
    """`POST [type]/_search`: parameters from the form body and the URL together."""
    form = await http.read_body(request, ctx.extras["max_body_bytes"], {"application/x-www-form-urlencoded"})
    params = list(request.query_params.multi_items()) + parse_qsl(form.decode("utf-8", "replace"),
                                                                  keep_blank_values=True)
    return await _search(request, ctx, (resource_type,), params)


async def search_system(request: Request, ctx: Context) -> Response:
    return await _search(request, ctx, (), list(request.query_params.multi_items()))


async def search_compartment(request: Request, ctx: Context, compartment_type: str, compartment_id: str,
                             resource_type: str) -> Response:
    return await _search(request, ctx, (resource_type,), list(request.query_params.multi_items()),
                         (compartment_type, compartment_id))


async def _search(request: Request, ctx: Context, types: tuple[str, ...], params: list[tuple[str, str]],
                  compartment: tuple[str, str] | None = None) -> Response:
    strict = http.prefer(request, "handling") == "strict"
    params = [(name, value) for name, value in params if name not in ("_format", "_pretty")]
    body = await search_interaction.search(ctx, types, params, strict=strict, compartment=compartment)
    return http.fhir_response(body, 200, None, http.pretty(request))


async def _accepted(ctx: Context, resource_type: str, body: bytes) -> bytes | dict:
    """A Subscription is checked (422 when unusable) and given its starting status before it is written."""
    return await subscription_service.accept(ctx, body) if resource_type == "Subscription" else body


async def subscription_status(request: Request, ctx: Context, resource_id: str | None = None) -> Response:
    """`Subscription/[id]/$status` or `Subscription/$status?id=…`."""
    ids = [resource_id] if resource_id else request.query_params.getlist("id")
    return http.fhir_response(await subscription_operations.status(ctx, ids), 200, None, http.pretty(request))


async def subscription_binding_token(request: Request, ctx: Context, resource_id: str) -> Response:
    """`Subscription/[id]/$get-ws-binding-token`."""
    return http.fhir_response(await subscription_operations.binding_token(ctx, resource_id), 200, None,
                              http.pretty(request))


async def subscription_events(request: Request, ctx: Context, resource_id: str) -> Response:
    """`Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=`."""
    body = await subscription_operations.events(ctx, resource_id, dict(request.query_params))
    return http.fhir_response(body, 200, None, http.pretty(request))


async def healthz(request: Request, ctx: Context) -> Response:
    return http.json_response({"status": "ok"})


async def readyz(request: Request, ctx: Context) -> Response:
    """200 when the store answers and can serve searches; 503 with an OperationOutcome saying why not."""
    await ctx.store.read("Patient", "readiness-probe")
    problem = ctx.store.readiness_problem()
    if problem is not None:
        raise FhirError(503, "transient", f"Not ready: {problem}")
    return http.json_response({"status": "ready", "storage": ctx.store.name})
