"""TestScript operations -> HTTP requests (method, URL, headers, body) for any FHIR server."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from hearth.capability import fhir_json, fhir_xml
from hearth.conformance.client import Exchange
from hearth.conformance.session import Session

MEDIA = {"json": "application/fhir+json", "xml": "application/fhir+xml", "ttl": "text/turtle"}

# operation type code -> HTTP method (codes from http://terminology.hl7.org/CodeSystem/testscript-operation-codes)
_METHODS = {
    "read": "GET", "vread": "GET", "search": "GET", "searchSystem": "GET", "history": "GET",
    "historyInstance": "GET", "historyType": "GET", "historySystem": "GET", "capabilities": "GET",
    "create": "POST", "transaction": "POST", "batch": "POST", "update": "PUT", "updateCreate": "PUT",
    "delete": "DELETE", "deleteCondSingle": "DELETE", "deleteCondMultiple": "DELETE", "patch": "PATCH",
}
_WITH_BODY = {"POST", "PUT", "PATCH"}


class OperationError(Exception):
    """An operation that cannot be turned into a request (a missing fixture, an unknown target)."""


def media(code: str | None, default: str) -> str:
    """`json` / `xml` shorthands of TestScript.operation.accept and contentType, or a full media type."""
    if not code:
        return default
    return MEDIA.get(code, code)


def build_request(operation: dict, session: Session, default_format: str) -> Exchange:
    code = (operation.get("type") or {}).get("code") or "operation"
    method = (operation.get("method") or _METHODS.get(code) or ("POST" if operation.get("sourceId") else "GET")).upper()
    url = _url(operation, code, session)
    headers = {"Accept": media(operation.get("accept"), MEDIA[default_format])}
    for header in operation.get("requestHeader", ()):
        headers[header["field"]] = session.substitute(header.get("value")) or ""
    body, resource = None, None
    source_id = operation.get("sourceId")
    if source_id and method in _WITH_BODY:
        if session.fixtures.get(source_id) is None:
            raise OperationError(f"sourceId '{source_id}' names no fixture or response with a body")
        resource = session.fixtures[source_id]
        if code in ("update", "updateCreate"):
            resource = _with_url_id(resource, url)
        content_type = media(operation.get("contentType"), MEDIA[default_format])
        headers.setdefault("Content-Type", content_type)
        try:
            body = fhir_xml.json_to_xml(resource) if "xml" in content_type else fhir_json.dumps(resource)
        except (ValueError, TypeError) as exc:
            raise OperationError(f"sourceId '{source_id}' cannot be sent as {content_type}: {exc}") from None
    return Exchange(method, url, headers, body, request_resource=resource)


def _with_url_id(resource: Any, url: str) -> Any:
    """An update's body carries the id of the URL it is PUT to (as reference engines do: fixtures are reused)."""
    path = url.split("?")[0].rstrip("/").split("/")
    if not isinstance(resource, dict) or len(path) < 2 or path[-2] != resource.get("resourceType"):
        return resource
    return {**resource, "id": path[-1]} if resource.get("id") != path[-1] else resource


def created_id(exchange: Exchange) -> tuple[str, str] | None:
    """`(type, id)` of the resource a create or update answered with (body, else Location, else the URL)."""
    resource = exchange.resource
    if isinstance(resource, dict) and resource.get("resourceType") and resource.get("id") \
            and resource["resourceType"] != "OperationOutcome":
        return resource["resourceType"], resource["id"]
    path = (exchange.headers.get("location") or exchange.url.split("?")[0]).split("/_history/")[0].rstrip("/")
    parts = path.split("/")
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _url(operation: dict, code: str, session: Session) -> str:
    base = session.base(operation.get("destination"))
    if operation.get("url"):
        url = session.substitute(operation["url"]) or ""
        return url if url.startswith(("http://", "https://")) else f"{base}/{url.lstrip('/')}"
    params = session.substitute(operation.get("params")) or ""
    if operation.get("encodeRequestUrl", True):
        # params come URL-shaped: keep their delimiters; encode spaces, non-ASCII and `|[]` (which servers such
        # as Tomcat refuse raw)
        params = quote(params, safe="/?&=:,;$*%+@!'()~#")
    if code == "capabilities":
        return f"{base}/metadata{params}"
    if code in ("transaction", "batch", "searchSystem", "historySystem") and not operation.get("resource"):
        return f"{base}{'/_history' if code == 'historySystem' else ''}{params}"
    target = operation.get("targetId")
    if target and not params.startswith("/"):
        path = _target_path(session, target, code)
        return f"{base}/{path}{params}"
    resource_type = operation.get("resource")
    if not resource_type:
        if code in ("update", "updateCreate", "patch") and operation.get("sourceId"):
            source_id = operation["sourceId"]
            resource_type, resource_id = _type_and_id(session.fixtures.get(source_id), source_id)
            return f"{base}/{resource_type}/{resource_id}{params}"
        return f"{base}{params}"
    if code in ("update", "updateCreate") and not params and operation.get("sourceId"):
        _, resource_id = _type_and_id(session.fixtures.get(operation["sourceId"]), operation["sourceId"])
        params = f"/{resource_id}"
    if code in ("history", "historyType") and not params:
        params = "/_history"
    return f"{base}/{resource_type}{params}"


def _target_path(session: Session, target: str, code: str) -> str:
    """`Type/id` of a targetId (a fixture, or a response whose body or Location names the resource)."""
    exchange = session.exchanges.get(target)
    resource: Any = session.fixtures.get(target)
    if target in session.server_ids:
        resource_type, resource_id = session.server_ids[target]
    elif resource is None and exchange is not None and created_id(exchange):
        resource_type, resource_id = created_id(exchange)  # type: ignore[misc]
    else:
        resource_type, resource_id = _type_and_id(resource, target)
    path = f"{resource_type}/{resource_id}"
    if code == "vread":
        version = ((resource.get("meta") or {}).get("versionId")) if isinstance(resource, dict) else None
        if version is None:
            raise OperationError(f"targetId '{target}' has no meta.versionId for a vread")
        return f"{path}/_history/{version}"
    if code in ("history", "historyInstance"):
        return f"{path}/_history"
    return path


def _type_and_id(resource: Any, name: str) -> tuple[str, str]:
    if not isinstance(resource, dict) or not resource.get("resourceType") or not resource.get("id"):
        raise OperationError(f"'{name}' names no resource with a type and an id")
    return resource["resourceType"], resource["id"]
