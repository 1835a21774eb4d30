"""Bundle entries of a batch or transaction: reading their requests, turning them into the dispatcher's requests,
writing the responses."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, Issue, invalid
from hearth.search.normalize import date_range
from hearth.interactions.bundles import entry, etag, parse_etag
from hearth.interactions.context import Context
from hearth.interactions.request import Caller, Interaction, Outcome, Request
from hearth.interactions.resources import check_type
from hearth.interactions.patch import JSON_PATCH, MERGE_PATCH, Patcher, compile_patch
from hearth.storage.base import Version
from hearth.storage.clock import from_text, to_instant

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


@dataclass(slots=True)
class EntryRequest:
    """One entry's request, checked: the method, the target the URL names, its conditions."""

    index: int
    method: str
    url: str
    segments: list[str]  # the URL path split on "/" (relative to the base)
    criteria: str | None  # the query string (a condition for PUT/PATCH/DELETE, search parameters for GET)
    full_url: str | None
    resource: dict[str, Any] | None
    if_none_exist: str | None = None
    if_match: int | None = None
    if_none_match: int | None = None
    if_modified_since: datetime | None = None
    # the type and id the URL names, read once from `segments` (every step of a transaction asks for them)
    type: str | None = field(init=False)
    id: str | None = field(init=False)

    def __post_init__(self) -> None:
        segments = self.segments
        self.type = segments[0] if segments and segments[0][:1] not in ("_", "$") else None
        self.id = segments[1] if len(segments) >= 2 and self.type and segments[1][:1] != "_" else None

    @property
    def label(self) -> str:
        return f"Bundle.entry[{self.index}] ({self.method} {self.url})"


@dataclass(slots=True)
class Result:
    """What an entry did: its status, the version written or read, a GET's body, or an outcome."""

    status: int
    version: Version | None = None
    body: bytes | None = None  # a GET's answer that is not a single stored version (history, search)
    outcome: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    unchanged: bool = False  # an update that found its content current (keep_unchanged): no version written


def parse_request(index: int, raw: Any, base_url: str) -> EntryRequest:
    """Check entry `index` of a batch/transaction Bundle and read its request (FhirError naming the entry)."""
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise invalid(f"{where} must be an object", (where,))
    request = raw.get("request")
    if not isinstance(request, dict):
        raise invalid(f"{where} has no request", (f"{where}.request",))
    method = request.get("method")
    if method not in METHODS:
        raise invalid(f"{where}.request.method '{method}' is not one of {', '.join(METHODS)}",
                      (f"{where}.request.method",))
    url = request.get("url")
    if not isinstance(url, str) or not url.strip():
        raise invalid(f"{where}.request.url is missing", (f"{where}.request.url",))
    url = url.strip()
    relative = url[len(base_url):] if base_url and url.startswith(base_url + "/") else url
    path, _, query = relative.partition("?")
    if "://" in path:
        raise invalid(f"{where}.request.url '{url}' is not on this server", (f"{where}.request.url",))
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise invalid(f"{where}.resource must be a resource", (f"{where}.resource",))
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise invalid(f"{where}.fullUrl must be a string", (f"{where}.fullUrl",))
    parsed = EntryRequest(index, method, url, [s for s in path.strip("/").split("/") if s], query or None, full_url,
                     resource, request.get("ifNoneExist") or None)
    parsed.if_match = _etag(request.get("ifMatch"), f"{where}.request.ifMatch")
    parsed.if_none_match = _etag(request.get("ifNoneMatch"), f"{where}.request.ifNoneMatch")
    since = request.get("ifModifiedSince")
    if since is not None:
        try:
            parsed.if_modified_since = from_text(date_range(since)[1])  # the whole second given
        except (ValueError, TypeError, FhirError):
            raise invalid(f"{where}.request.ifModifiedSince '{since}' is not an instant",
                          (f"{where}.request.ifModifiedSince",)) from None
    if method in ("POST", "PUT") and resource is None:
        raise invalid(f"{where}: a {method} entry needs a resource", (f"{where}.resource",))
    return parsed


_VERBS = {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}


def interaction_of(request: EntryRequest) -> Interaction:
    """What a write entry asks for: create, update, delete or patch, the last three maybe "conditional-"."""
    verb = _VERBS[request.method]
    resource_type = request.type
    if resource_type is None:
        raise invalid(f"{request.method} {request.url} does not name a resource type",
                      (f"Bundle.entry[{request.index}].request.url",))
    check_type(resource_type)
    if request.method == "POST":
        if len(request.segments) == 1 and not request.criteria:
            return verb  # type: ignore[return-value]
    elif len(request.segments) == 2 and request.id and not request.criteria:
        return verb  # type: ignore[return-value]
    elif len(request.segments) == 1 and request.criteria:
        return "conditional-" + verb  # type: ignore[return-value]
    expected = "Type" if request.method == "POST" else "Type/id or Type?criteria"
    raise invalid(f"{request.method} takes a URL like {expected}, not '{request.url}'",
                  (f"Bundle.entry[{request.index}].request.url",))


def _etag(value: Any, where: str) -> int | None:
    if value is None:
        return None
    version = parse_etag(str(value))
    if version is None:
        raise invalid(f"{where} '{str(value)[:100]}' is not an ETag like W/\"3\"", (where,))
    return version


def patch_document(request: EntryRequest) -> tuple[bytes | dict[str, Any], str]:
    """The patch an entry carries, and its media type: a Binary holding a JSON Patch or a JSON Merge Patch
    (base64), or a FHIRPath Patch Parameters."""
    resource = request.resource
    if resource is None:
        raise invalid("A PATCH entry needs a resource: a Binary holding a JSON Patch or a JSON Merge Patch, or a "
                      "Parameters (FHIRPath Patch)")
    if resource.get("resourceType") != "Binary":
        return resource, "application/fhir+json"
    content_type = str(resource.get("contentType") or "").split(";")[0].strip().lower()
    if content_type not in (JSON_PATCH, MERGE_PATCH):
        raise invalid(f"A Binary patch must have contentType {JSON_PATCH} or {MERGE_PATCH}, not "
                      f"'{resource.get('contentType')}'", ("Binary.contentType",))
    try:
        return base64.b64decode(resource.get("data") or "", validate=True), content_type
    except (ValueError, TypeError):
        raise invalid("The Binary patch's data is not base64") from None


def patcher_of(request: EntryRequest) -> Patcher:
    return compile_patch(*patch_document(request))


def dispatched(request: EntryRequest, caller: Caller, large: bool = False) -> Request:
    """The dispatcher's request for an entry, asked by `caller` (`large`: its resource is big)."""
    query = request.criteria or ""
    target = Request(_interaction(request), caller, request.type, request.id, large=large,
                     if_match=request.if_match, if_none_match=request.if_none_match,
                     if_modified_since=request.if_modified_since)
    if target.interaction == "conditional-create":
        query = (request.if_none_exist or "").split("?", 1)[-1]  # `identifier=…` or `Patient?identifier=…`
    elif target.interaction == "vread":
        target.version_id = request.segments[3]
    elif target.interaction == "search-compartment":
        target.compartment, target.type, target.id = (request.segments[0], request.segments[1]), request.segments[2], None
    elif target.interaction in ("search-system", "history-system"):
        target.type, target.id = None, None
    if request.method == "PATCH":
        target.body, target.media_type = patch_document(request)
    elif request.method in ("POST", "PUT"):
        target.body = request.resource
    target.params = tuple(parse_qsl(query, keep_blank_values=True))
    return target


def _interaction(request: EntryRequest) -> Interaction:
    """What an entry asks for, from its method and URL."""
    if request.method not in ("GET", "HEAD"):
        interaction = interaction_of(request)
        return "conditional-create" if interaction == "create" and request.if_none_exist else interaction
    segments = request.segments
    if len(segments) == 2 and request.id:
        return "read"
    if len(segments) == 4 and segments[2] == "_history" and request.id:
        return "vread"
    if segments and segments[-1] == "_history" and len(segments) <= 3:
        return ("history-system", "history-type", "history-instance")[len(segments) - 1]
    if len(segments) == 3 and request.id:
        return "search-compartment"
    if len(segments) <= 1:
        return "search-type" if segments else "search-system"
    raise FhirError(400, "not-supported", f"GET {request.url} is not supported in a Bundle entry")


def result_of(outcome: Outcome) -> Result:
    return Result(outcome.status, outcome.version, outcome.body, headers=outcome.headers)


def error_result(error: FhirError) -> Result:
    return Result(error.status, outcome=error.outcome(), headers=error.headers)


def at_entry(error: FhirError, request: EntryRequest | None, index: int) -> FhirError:
    """`error` raised by entry `index`, restated so the Bundle's OperationOutcome names the entry."""
    label = request.label if request is not None else f"Bundle.entry[{index}]"
    issues = [Issue(issue.severity, issue.code, f"{label}: {issue.diagnostics}",
                    issue.expression or (f"Bundle.entry[{index}]",)) for issue in error.issues]
    return FhirError(error.status, "", "", issues=issues, headers=error.headers)


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def response_entry(ctx: Context, result: Result, prefer_return: str | None, method: str) -> bytes:
    """The response Bundle's entry for `result`: stored bytes spliced in, never re-serialised."""
    response: dict[str, Any] = {"status": status_line(result.status)}
    version = result.version
    if version is not None:
        response["etag"] = etag(version.version_id)
        response["lastModified"] = to_instant(version.last_updated)
        if not version.deleted and method in ("POST", "PUT", "PATCH"):
            response["location"] = f"{version.type}/{version.id}/_history/{version.version_id}"
    if result.outcome is not None:
        response["outcome"] = result.outcome
    elif prefer_return == "OperationOutcome" and version is not None and method != "GET":
        response["outcome"] = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "information", "code": "informational",
             "diagnostics": f"{version.type}/{version.id} version {version.version_id}: {status_line(result.status)}"}]}
    url, body = None, None
    if version is not None and not version.deleted:
        url = f"{ctx.base_url}/{version.type}/{version.id}"
        read = method == "GET" and result.status == 200
        written = method in ("POST", "PUT", "PATCH") and prefer_return in (None, "representation")
        if read or written:
            body = version.body
    elif result.body is not None and method == "GET":
        body = result.body
    return entry(url, body, response=response)


def load_bundle(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """A request body that must be a Bundle (400 otherwise)."""
    bundle = body if isinstance(body, dict) else _loads(body)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise invalid("POST to the base URL takes a Bundle of type batch or transaction", ("resourceType",))
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise invalid(f"Bundle.type must be batch or transaction here, not '{kind}'", ("Bundle.type",))
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise invalid("Bundle.entry must be an array", ("Bundle.entry",))
    return bundle


def _loads(body: bytes) -> Any:
    try:
        return fhir_json.loads(body)
    except fhir_json.JsonSyntaxError as exc:
        raise invalid(f"The body is not valid JSON: {exc}", code="structure") from None
