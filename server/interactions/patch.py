"""patch: JSON Patch (RFC 6902) or FHIRPath Patch, on a resource by id or by condition, with If-Match.

The patched resource is validated like an update: an invalid result is 422 and nothing is written.
"""

from __future__ import annotations

from typing import Any, Callable

import jsonpatch

from capability import fhir_json
from capability.outcome import FhirError, invalid
from server.interactions import conditional
from server.interactions.context import Context
from server.interactions.crud import check_id_known, read, version_mismatch, write_new
from server.interactions.fhirpath_patch import compile_fhirpath_patch, unprocessable
from server.interactions.resources import check_type, parse_resource
from storage.base import Assertion, AssertionFailed, Version, VersionConflict

JSON_PATCH = "application/json-patch+json"
FHIRPATH_PATCH_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})

Patcher = Callable[[dict[str, Any]], dict[str, Any]]

_RETRIES = 20


def compile_patch(body: bytes | Any, content_type: str) -> Patcher:
    """A patch document (bytes, or already parsed) -> the function applying it. 400 for a malformed patch,
    415 for a media type that is neither JSON Patch nor FHIRPath Patch."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = fhir_json.loads(body)
        except fhir_json.JsonSyntaxError as exc:
            raise invalid(f"The patch is not valid JSON: {exc}", code="structure") from None
    if content_type == JSON_PATCH:
        return _json_patch(body)
    if content_type in FHIRPATH_PATCH_TYPES:
        return compile_fhirpath_patch(body)
    raise FhirError(415, "not-supported", f"PATCH content type '{content_type}' is not supported; use "
                                          f"{JSON_PATCH} or a FHIRPath Patch Parameters as application/fhir+json")


def _json_patch(operations: Any) -> Patcher:
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise invalid("A JSON Patch is an array of operation objects")
    try:  # one JsonPatch per operation, so that a failure names its operation
        compiled = [jsonpatch.JsonPatch([op]) for op in operations]
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException) as exc:
        raise invalid(f"Invalid JSON Patch: {exc}") from None

    def apply(resource: dict[str, Any]) -> dict[str, Any]:
        for number, (operation, step) in enumerate(zip(operations, compiled)):
            try:
                resource = step.apply(resource, in_place=True)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                reason = "test failed" if isinstance(exc, jsonpatch.JsonPatchTestFailed) else "cannot be applied"
                raise unprocessable(f"JSON Patch operation {number} ({operation.get('op')} "
                                    f"{operation.get('path')}) {reason}: {str(exc)[:200]}",
                                    str(operation.get("path"))) from None
        return resource
    return apply


def patched(current: Version, patcher: Patcher) -> dict[str, Any]:
    """`current` with the patch applied and validated (422 when the result is not a valid resource)."""
    resource = fhir_json.loads(current.body)
    result = patcher(resource)
    if not isinstance(result, dict) or result.get("resourceType") != current.type:
        raise FhirError(422, "processing", f"The patch changes the resourceType of {current.type}/{current.id}",
                        ("resourceType",))
    if result.get("id") != current.id:
        raise FhirError(422, "processing", f"The patch changes the id of {current.type}/{current.id}",
                        (f"{current.type}.id",))
    try:
        return parse_resource(result, current.type)
    except FhirError as error:
        raise FhirError(422, "processing", "", issues=error.issues) from None


async def patch(ctx: Context, resource_type: str, resource_id: str, patcher: Patcher,
                if_match: int | None = None) -> Version:
    """PATCH Type/id: the new version."""
    check_type(resource_type)
    check_id_known(resource_id)
    for _ in range(_RETRIES):
        current = await read(ctx, resource_type, resource_id)
        try:
            return await _write_patched(ctx, current, patcher, if_match)
        except VersionConflict:
            continue
    raise FhirError(409, "conflict", f"{resource_type}/{resource_id} is being updated concurrently; try again")


async def patch_conditional(ctx: Context, resource_type: str, criteria: str, patcher: Patcher,
                            if_match: int | None = None) -> Version:
    """PATCH Type?criteria: patch the one match (none: 404, several: 412)."""
    check_type(resource_type)
    query = conditional.parse_criteria(ctx, resource_type, criteria)
    for _ in range(conditional.RETRIES):
        found = await conditional.matches(ctx, query, resource_type, criteria, "a conditional patch")
        if not found:
            raise FhirError(404, "not-found", f"No {resource_type} matches {criteria}; nothing to patch")
        try:
            return await _write_patched(ctx, found[0], patcher, if_match,
                                        (Assertion(query, conditional.ids(found)),))
        except (VersionConflict, AssertionFailed):
            continue
    raise conditional.lost_race(resource_type, criteria)


async def _write_patched(ctx: Context, current: Version, patcher: Patcher, if_match: int | None,
                         assertions: tuple[Assertion, ...] = ()) -> Version:
    if if_match is not None and current.version_id != if_match:
        raise version_mismatch(current.type, current.id, if_match, current)
    resource = patched(current, patcher)
    try:
        return await write_new(ctx, current.type, current.id, resource, current.version_id, assertions)
    except VersionConflict as conflict:
        if if_match is not None:
            raise version_mismatch(current.type, current.id, if_match, None, conflict.actual) from None
        raise
