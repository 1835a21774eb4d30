"""HTTP details of the FHIR REST API: content negotiation, bodies, headers, responses."""

from __future__ import annotations

from email.utils import format_datetime, parsedate_to_datetime
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from hearth.capability import fhir_json, fhir_xml
from hearth.capability.outcome import FhirError, Issue, operation_outcome
from hearth.storage.base import Version
from hearth.interactions.bundles import etag
from hearth.interactions.resources import is_large, off_loop

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
_JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "json", "*/*",
               "application/*", "text/json"}
_FORMAT_JSON = {"json", "application/json", "application/fhir+json", "application/json+fhir", "text/json"}
_BODY_JSON = {"application/fhir+json", "application/json", "application/json+fhir", "text/json"}
_XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "text/xml"}
_FORMAT_XML = {"xml", *_XML_TYPES}


def check_accept(request: Request) -> bool:
    """True when the response should be XML; 406 for formats Hearth does not produce. `_format` overrides Accept."""
    wanted = request.query_params.get("_format")
    if wanted is not None:
        # `application/fhir+json` written literally in a URL arrives as `application/fhir json` (+ is a space)
        media = wanted.split(";")[0].strip().lower().replace(" ", "+")
        if media in _FORMAT_XML:
            return True
        if media not in _FORMAT_JSON:
            raise FhirError(406, "not-supported", f"_format '{wanted}' is not supported; use json or xml")
        return False
    accept = request.headers.get("accept")
    if not accept:
        return False
    for media in _by_preference(accept):  # the most preferred type Hearth can produce wins
        if media in _JSON_TYPES or media.startswith("text/html"):
            return False
        if media in _XML_TYPES:
            return True
    raise FhirError(406, "not-supported", f"Cannot produce '{accept}'; Hearth serves {FHIR_JSON} and {FHIR_XML}")


def _by_preference(accept: str) -> list[str]:
    """Accept's media types, highest q first (ties in the order given); q=0 ones left out."""
    ranked = []
    for position, part in enumerate(accept.split(",")):
        media, *params = part.split(";")
        quality = 1.0
        for param in params:
            key, _, value = param.strip().partition("=")
            if key.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, media.strip().lower()))
    return [media for _, _, media in sorted(ranked)]


async def read_body(request: Request, limit: int, content_types: set[str] | None = None) -> bytes:
    """The request body, refused with 415 for a media type other than `content_types` and 413 past `limit`.

    FHIR XML bodies are accepted wherever JSON is, and handed on converted to JSON.
    """
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    allowed = content_types or _BODY_JSON
    if media in _XML_TYPES and (content_types is None or _BODY_JSON & content_types):
        xml = await read_body(request, limit, {media})
        return await off_loop(is_large(xml), _xml_body, xml)
    if media not in allowed:
        shown = media or "none"
        raise FhirError(415, "not-supported", f"Content-Type '{shown}' is not supported; use {FHIR_JSON}")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_media(request: Request) -> str:
    """The media type of the body `read_body` hands on: FHIR XML arrives converted to FHIR JSON."""
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    return FHIR_JSON if media in _XML_TYPES else media


def _xml_body(body: bytes) -> bytes:
    """An XML resource as FHIR JSON bytes (400 when it is not FHIR XML)."""
    try:
        return fhir_json.dumps(fhir_xml.xml_to_json(body))
    except fhir_xml.FhirXmlError as exc:
        raise FhirError(400, "structure", str(exc)) from None


def as_xml(response: Response) -> Response:
    """A FHIR JSON response re-encoded as FHIR XML (other responses, e.g. empty or plain text, unchanged)."""
    if not response.body or not (response.media_type or "").startswith(FHIR_JSON):
        return response
    resource = fhir_json.loads(response.body, trusted=True)
    if not isinstance(resource, dict) or "resourceType" not in resource:
        return response  # not a FHIR resource (e.g. /healthz): it has no XML form
    try:
        # salvage: a narrative stored before narratives were checked is served as its escaped text, not a 500
        body = fhir_xml.json_to_xml(resource, salvage=True)
    except fhir_xml.FhirXmlError as exc:  # stored data that is not R4: a bug elsewhere
        return error_response(FhirError(500, "exception", f"The resource cannot be written as XML: {exc}"))
    headers = {key: value for key, value in response.headers.items()
               if key not in ("content-length", "content-type")}
    return Response(body, response.status_code, headers, media_type=f"{FHIR_XML}; charset=utf-8")


def too_large(limit: int) -> FhirError:
    return FhirError(413, "too-costly", f"The body exceeds the limit of {limit} bytes")


def prefer(request: Request, name: str) -> str | None:
    """One token of the Prefer header, e.g. prefer(request, "return") -> "minimal"."""
    for part in (request.headers.get("prefer") or "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key.strip().lower() == name:
                return value.strip().strip('"')
    return None


def pretty(request: Request) -> bool:
    return request.query_params.get("_pretty") == "true"


def fhir_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None,
                  pretty_print: bool = False) -> Response:
    if pretty_print and body:
        body = fhir_json.pretty_bytes(body)
    return Response(body, status, headers, media_type=f"{FHIR_JSON}; charset=utf-8")


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None,
                  pretty_print: bool = False) -> Response:
    return fhir_response(fhir_json.dumps(value, pretty=pretty_print), status, headers)


def error_response(error: FhirError, pretty_print: bool = False) -> Response:
    return json_response(error.outcome(), error.status, error.headers, pretty_print)


def version_headers(version: Version, base_url: str | None = None) -> dict[str, str]:
    """ETag and Last-Modified (and Location when `base_url` is given) for a stored version."""
    headers = {"ETag": etag(version.version_id), "Last-Modified": http_date(version.last_updated)}
    if base_url is not None:
        headers["Location"] = f"{base_url}/{version.type}/{version.id}/_history/{version.version_id}"
    return headers


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


def parse_http_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def outcome_body(diagnostics: str, severity: str = "information", code: str = "informational") -> bytes:
    return fhir_json.dumps(operation_outcome([Issue(severity, code, diagnostics)]))
