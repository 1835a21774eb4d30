"""Turning a client's body into a stored version: parse, check, validate, stamp, index."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any, Callable, TypeVar

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, invalid
from hearth.capability.resource_types import is_resource_type, is_valid_id
from hearth.capability.validation import TooManyElements, validate_resource
from hearth.search.entries import Entry
from hearth.search.extract import extract
from hearth.interactions.context import Context
from hearth.interactions.limits import Limits
from hearth.storage.clock import to_instant

# Bodies past this size are parsed, validated, stamped, serialised and indexed on a worker thread: on the event loop
# that work would stall every other request. Smaller ones stay here (a thread hop costs ~50-100 us).
OFF_LOOP_BYTES = 256 * 1024
_DEFAULT_LIMITS = Limits()

T = TypeVar("T")


def check_type(resource_type: str) -> None:
    if not is_resource_type(resource_type):
        raise FhirError(404, "not-supported", f"Unknown resource type '{resource_type}'")


def check_id(resource_id: str) -> None:
    if not is_valid_id(resource_id):
        raise invalid(f"Invalid resource id '{resource_id}' (1-64 characters of A-Z a-z 0-9 - .)")


def is_large(body: bytes | dict[str, Any]) -> bool:
    """Whether a client's body is big enough for a worker thread (a parsed one cannot tell: its caller knows)."""
    return not isinstance(body, dict) and len(body) > OFF_LOOP_BYTES


def large_parts(resources: list[Any]) -> list[bool]:
    """Which resources, parsed from one large Bundle or file, are large themselves (serialised past OFF_LOOP_BYTES).
    It serialises them all: call it on a worker thread."""
    return [isinstance(resource, dict) and _serialised_size(resource) > OFF_LOOP_BYTES for resource in resources]


def _serialised_size(resource: dict[str, Any]) -> int:
    try:
        return len(fhir_json.dumps(resource))
    except TypeError:  # nested past what orjson writes: large enough (validation refuses it, off the loop)
        return OFF_LOOP_BYTES + 1


async def off_loop(large: bool, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`, on a worker thread when `large`, else right here."""
    if large:
        return await asyncio.to_thread(function, *args)
    return function(*args)


def parse_resource(body: bytes | dict[str, Any], resource_type: str | None,
                   limits: Limits = _DEFAULT_LIMITS) -> dict[str, Any]:
    """Parse and validate a resource; `resource_type` is the type the URL names (None: any). Every write checks
    what it stores here, a patched resource too: 413 past `limits.max_resource_elements`."""
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
    try:
        validate_resource(resource, limits.max_resource_elements)
    except TooManyElements:
        limit = limits.max_resource_elements
        raise FhirError(413, "too-costly", f"The resource holds more than {limit:,} JSON values: it exceeds "
                                           f"HEARTH_MAX_RESOURCE_ELEMENTS ({limit})") from None
    return resource


async def parse_body(ctx: Context, body: bytes | dict[str, Any], resource_type: str | None,
                     large: bool = False) -> tuple[dict[str, Any], bool]:
    """parse_resource under `ctx`'s limits, on a worker thread when the body is large (`large`: a parsed body the
    caller cut from a large Bundle or file); also whether it is large, for the write that follows."""
    large = large or is_large(body)
    return await off_loop(large, parse_resource, body, resource_type, ctx.limits), large


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
