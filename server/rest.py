"""The FHIR REST endpoints: an HTTP request made the dispatcher's typed request, its outcome written as HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from hearth.capability.outcome import FhirError, invalid
from hearth.capability.resource_types import is_resource_type
from hearth.interactions.export import files as export_files
from hearth.interactions.export.jobs import JOB_FILES
from hearth.interactions import patch as patching
from hearth.interactions.bundles import parse_etag
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import ANONYMOUS, Interaction, Outcome
from hearth.interactions.request import Request as FhirRequest
from hearth.server import http

_FORMATTING = ("_format", "_pretty")  # the HTTP layer's own parameters: no interaction sees them
_WRITES_WITH_LOCATION = frozenset({"create", "conditional-create", "update", "conditional-update", "patch",
                                   "conditional-patch"})


def _asked(request: Request, interaction: Interaction, **fields: Any) -> FhirRequest:
    """The dispatcher's request for an HTTP one, for the caller the app authenticated (server/app.py)."""
    fields.setdefault("params", tuple((name, value) for name, value in request.query_params.multi_items()
                                      if name not in _FORMATTING))
    headers = request.headers
    since = headers.get("if-modified-since")
    none_match = headers.get("if-none-match")
    return FhirRequest(interaction, request.scope.get("hearth.caller", ANONYMOUS), if_match=_if_match(request),
                       if_none_match=parse_etag(none_match) if none_match is not None else None,
                       if_modified_since=http.parse_http_date(since) if since is not None else None,
                       prefer_return=http.prefer(request, "return"),
                       strict=http.prefer(request, "handling") == "strict", **fields)


def _if_match(request: Request) -> int | None:
    """The version an If-Match header names (400 for one that is not an ETag)."""
    if_match = request.headers.get("if-match")
    expected = parse_etag(if_match)
    if if_match is not None and expected is None:
        raise invalid(f"Invalid If-Match '{if_match[:100]}': expected an ETag like W/\"3\"")
    return expected


async def _answer(request: Request, ctx: Context, asked: FhirRequest) -> Response:
    """Dispatch, then write the outcome: a Bundle or other body, or the version read or written."""
    outcome = await dispatch(ctx, asked)
    pretty = http.pretty(request)
    version = outcome.version
    if outcome.status == 304 and version is not None:
        return Response(b"", 304, http.version_headers(version))
    if version is None:
        return http.fhir_response(outcome.body, outcome.status, outcome.headers, pretty) if outcome.body \
            else Response(b"", outcome.status, outcome.headers)
    if asked.interaction in ("delete", "conditional-delete"):
        return Response(b"", outcome.status, {"ETag": f'W/"{version.version_id}"'})
    if asked.interaction not in _WRITES_WITH_LOCATION:
        return http.fhir_response(outcome.body or version.body, outcome.status, http.version_headers(version), pretty)
    return _representation(request, outcome, http.version_headers(version, ctx.base_url))


def _representation(request: Request, outcome: Outcome, headers: dict[str, str]) -> Response:
    """The body `Prefer: return=` asks for after a write: the resource (default), nothing, or an outcome."""
    version, status = outcome.version, outcome.status
    assert version is not None
    wanted = http.prefer(request, "return")
    if wanted == "minimal":
        return Response(b"", status, headers)
    if wanted == "OperationOutcome":
        verb = "created" if status == 201 else "updated"
        body = http.outcome_body(f"{version.type}/{version.id} {verb} (version {version.version_id})")
        return http.fhir_response(body, status, headers, http.pretty(request))
    return http.fhir_response(version.body, status, headers, http.pretty(request))


# --- reading ------------------------------------------------------------------------------------------------

async def metadata(request: Request, ctx: Context) -> Response:
    return await _answer(request, ctx, _asked(request, "capabilities"))


async def read(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    return await _answer(request, ctx, _asked(request, "read", type=resource_type, id=resource_id))


async def vread(request: Request, ctx: Context, resource_type: str, resource_id: str, version_id: str) -> Response:
    return await _answer(request, ctx, _asked(request, "vread", type=resource_type, id=resource_id,
                                              version_id=version_id))


async def history(request: Request, ctx: Context, resource_type: str | None = None,
                  resource_id: str | None = None) -> Response:
    kind = "history-instance" if resource_id else "history-type" if resource_type else "history-system"
    return await _answer(request, ctx, _asked(request, kind, type=resource_type, id=resource_id))


async def search_type(request: Request, ctx: Context, resource_type: str) -> Response:
    return await _answer(request, ctx, _asked(request, "search-type", type=resource_type))


async def search_type_post(request: Request, ctx: Context, resource_type: str) -> Response:
    """`POST [type]/_search`: parameters from the form body and the URL together."""
    form = await http.read_body(request, ctx.limits.max_body_bytes, {"application/x-www-form-urlencoded"})
    params = [*request.query_params.multi_items(), *parse_qsl(form.decode("utf-8", "replace"), keep_blank_values=True)]
    return await _answer(request, ctx, _asked(request, "search-type", type=resource_type,
                                              params=tuple(p for p in params if p[0] not in _FORMATTING)))


async def search_system(request: Request, ctx: Context) -> Response:
    return await _answer(request, ctx, _asked(request, "search-system"))


async def search_compartment(request: Request, ctx: Context, compartment_type: str, compartment_id: str,
                             resource_type: str) -> Response:
    return await _answer(request, ctx, _asked(request, "search-compartment", type=resource_type,
                                              compartment=(compartment_type, compartment_id)))


async def operation(request: Request, ctx: Context, *path: str, version_id: str | None = None) -> Response:
    """`[base]/$op`, `[type]/$op`, `[type]/[id]/$op` (GET or POST)."""
    *target, name = path
    sent = request.method == "POST" and "content-type" in request.headers  # an operation may take no body
    body = await http.read_body(request, ctx.limits.max_body_bytes) if sent else None
    return await _answer(request, ctx, _asked(request, "operation", type=target[0] if target else None,
                                              id=target[1] if len(target) > 1 else None, version_id=version_id,
                                              operation=name, body=body or None))


async def version_operation(request: Request, ctx: Context, resource_type: str, resource_id: str, version_id: str,
                            name: str) -> Response:
    """`[type]/[id]/_history/[vid]/$op`: the operations served on a version (`$meta`, `$meta-add`, …)."""
    return await operation(request, ctx, resource_type, resource_id, name, version_id=version_id)


# --- Bulk Data export (interactions/export) ------------------------------------------------------------------

async def export_kick_off(request: Request, ctx: Context, *target: str) -> Response:
    """`[base]/$export`, `Patient/$export`, `Group/[id]/$export`: asynchronous only (Bulk Data 2.0)."""
    if http.prefer(request, "respond-async") is None:
        raise invalid("$export runs asynchronously: send the header Prefer: respond-async")
    return await operation(request, ctx, *target, "$export")


async def export_status(request: Request, ctx: Context, job_id: str) -> Response:
    return _outcome(await request.scope["hearth.exports"].status(_caller(request), job_id))


async def export_cancel(request: Request, ctx: Context, job_id: str) -> Response:
    return _outcome(await request.scope["hearth.exports"].cancel(_caller(request), job_id))


async def export_download(request: Request, ctx: Context, job_id: str, name: str) -> Response:
    """One of an export's files, streamed from disk; a file of resources is asked for through the dispatcher (the
    caller's read access to its type, and the audit trail)."""
    exports = request.scope["hearth.exports"]
    prefix = name.partition("-")[0]
    if not export_files.valid_name(name) or not (prefix in JOB_FILES or is_resource_type(prefix)):
        raise FhirError(404, "not-found", f"No export file {name}")
    if prefix not in JOB_FILES:
        await dispatch(ctx, _asked(request, "operation", type=prefix, operation="$export-file",
                                   params=(("_jobId", job_id), ("file", name))))
    path = await exports.file_path(_caller(request), job_id, name)
    if not path.is_file():  # removed since: expired or cancelled
        raise FhirError(404, "not-found", f"No export file {name}")
    return FileResponse(path, media_type=export_files.NDJSON)


def _caller(request: Request) -> Any:
    return request.scope.get("hearth.caller", ANONYMOUS)


def _outcome(outcome: Outcome) -> Response:
    if outcome.body:
        return http.fhir_response(outcome.body, outcome.status, outcome.headers)
    return Response(b"", outcome.status, outcome.headers)


HL7V2_TYPES = {"x-application/hl7-v2+er7", "application/hl7-v2", "text/plain"}


async def hl7v2(request: Request, ctx: Context, connector: str) -> Response:
    """`POST [base]/hl7v2/NAME`: an HL7 v2 message (or batch) for connector NAME, answered with its ACK, for
    gateways that speak HTTP rather than MLLP (the operation `$hl7v2` of connectors/operations.py)."""
    body = await http.read_body(request, ctx.limits.max_body_bytes, HL7V2_TYPES)
    outcome = await dispatch(ctx, _asked(request, "operation", operation="$hl7v2", params=(("connector", connector),),
                                         body=body, media_type=http.body_media(request)))
    return Response(outcome.body or b"", outcome.status, outcome.headers)


# --- writing ------------------------------------------------------------------------------------------------

async def create(request: Request, ctx: Context, resource_type: str) -> Response:
    """POST [type], conditional with If-None-Exist or search parameters in the URL (a match: 200 and nothing
    written)."""
    body = await http.read_body(request, ctx.limits.max_body_bytes)
    condition = _create_condition(request)
    if condition is None:
        return await _answer(request, ctx, _asked(request, "create", type=resource_type, body=body, params=()))
    return await _answer(request, ctx, _asked(request, "conditional-create", type=resource_type, body=body,
                                              params=condition))


def _create_condition(request: Request) -> tuple[tuple[str, str], ...] | None:
    """A create's condition: If-None-Exist, or search parameters in the URL (`POST Patient?identifier=…`, as
    clients like fhirpy send them; ignoring them would create a duplicate each time). 400 when both are given
    and differ."""
    header = request.headers.get("if-none-exist")
    in_url = tuple((name, value) for name, value in request.query_params.multi_items() if name not in _FORMATTING)
    if header is None:
        return in_url or None
    # the header may be `identifier=…` or `Patient?identifier=…`
    in_header = tuple(parse_qsl(header.split("?", 1)[-1], keep_blank_values=True))
    if in_url and sorted(in_url) != sorted(in_header):
        raise invalid("If-None-Exist and the search parameters in the URL give different conditions; send one")
    return in_header


async def update(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    body = await http.read_body(request, ctx.limits.max_body_bytes)
    return await _answer(request, ctx, _asked(request, "update", type=resource_type, id=resource_id, body=body))


async def conditional_update(request: Request, ctx: Context, resource_type: str) -> Response:
    body = await http.read_body(request, ctx.limits.max_body_bytes)
    return await _answer(request, ctx, _asked(request, "conditional-update", type=resource_type, body=body))


async def patch(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    """PATCH [type]/[id]: JSON Patch, JSON Merge Patch or FHIRPath Patch."""
    body, media = await _patch_body(request, ctx)
    return await _answer(request, ctx, _asked(request, "patch", type=resource_type, id=resource_id, body=body,
                                              media_type=media))


async def conditional_patch(request: Request, ctx: Context, resource_type: str) -> Response:
    body, media = await _patch_body(request, ctx)
    return await _answer(request, ctx, _asked(request, "conditional-patch", type=resource_type, body=body,
                                              media_type=media))


async def _patch_body(request: Request, ctx: Context) -> tuple[bytes, str]:
    media = http.body_media(request)
    patching.compiler(media)  # 415 for a media type that is no patch format, before the body is read
    return await http.read_body(request, ctx.limits.max_body_bytes, set(patching.PATCH_TYPES)), media


async def delete(request: Request, ctx: Context, resource_type: str, resource_id: str) -> Response:
    return await _answer(request, ctx, _asked(request, "delete", type=resource_type, id=resource_id))


async def conditional_delete(request: Request, ctx: Context, resource_type: str) -> Response:
    return await _answer(request, ctx, _asked(request, "conditional-delete", type=resource_type))


async def bundle(request: Request, ctx: Context) -> Response:
    """POST [base]: a batch or transaction Bundle (which of the two, the Bundle says)."""
    body = await http.read_body(request, ctx.limits.max_body_bytes)
    return await _answer(request, ctx, _asked(request, "batch", body=body))


# --- the server's own ---------------------------------------------------------------------------------------

async def healthz(request: Request, ctx: Context) -> Response:
    return http.json_response({"status": "ok"})


async def readyz(request: Request, ctx: Context) -> Response:
    problem = getattr(ctx.store, "readiness_problem", lambda: None)()
    if problem is not None:
        raise FhirError(503, "transient", problem)
    await ctx.store.read("Patient", "readiness-probe")
    return http.json_response({"status": "ready", "storage": ctx.store.name})
