"""Turning a client's body into a stored version: parse, check, validate, stamp, index."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from capability import fhir_json
from capability.outcome import FhirError, invalid
from capability.resource_types import is_resource_type, is_valid_id
from capability.validation import validate_resource
from search.entries import Entry
from search.extract import extract
from server.interactions.context import Context
from storage.clock import to_instant


def check_type(resource_type: str) -> None:
    if not is_resource_type(resource_type):
        raise FhirError(404, "not-supported", f"Unknown resource type '{resource_type}'")


def check_id(resource_id: str) -> None:
    if not is_valid_id(resource_id):
        raise invalid(f"Invalid resource id '{resource_id}' (1-64 characters of A-Z a-z 0-9 - .)")


def parse_resource(body: bytes | dict[str, Any], resource_type: str | None) -> dict[str, Any]:
    """Parse and validate a resource; `resource_type` is the type the URL names (None: any)."""
    if isinstance(body, dict):
        resource = body
    else:
        try:
            resource = fhir_json.loads(body)
        except fhir_json.JsonSyntaxError as exc:
            raise invalid(f"The body is not valid JSON: {exc}", code="structure") from None
    if not isinstance(resource, dict):
        raise invalid("The body must be a JSON object (a FHIR resource)", code="structure")
    found = resource.get("resourceType")
    if not isinstance(found, str) or not found:
        raise invalid("The resource has no resourceType", ("resourceType",), code="required")
    if resource_type is not None and found != resource_type:
        raise invalid(f"The resource is a {found}, but the URL is for {resource_type}", ("resourceType",))
    if not is_resource_type(found):
        raise invalid(f"Unknown resource type '{found}'", ("resourceType",), code="not-supported")
    validate_resource(resource)
    return resource


def new_id() -> str:
    return str(uuid.uuid4())


def stamp(resource: dict[str, Any], resource_id: str, version_id: int, last_updated: datetime) -> dict[str, Any]:
    """The resource with the server-owned `id` and `meta.versionId`/`meta.lastUpdated` set, order kept."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = to_instant(last_updated)
    stamped: dict[str, Any] = {"resourceType": resource["resourceType"], "id": resource_id, "meta": meta}
    for key, value in resource.items():
        if key not in stamped:
            stamped[key] = value
    return stamped


def index_entries(ctx: Context, resource: dict[str, Any]) -> list[Entry]:
    return extract(resource, ctx.registry, base_url=ctx.base_url)


def serialise(resource: dict[str, Any]) -> bytes:
    return fhir_json.dumps(resource)
