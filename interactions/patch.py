"""patch: JSON Patch (RFC 6902), JSON Merge Patch (RFC 7396) or FHIRPath Patch, on a resource by id or by
condition, with If-Match.

The format follows the Content-Type: application/json-patch+json, application/merge-patch+json, or FHIR JSON
(a FHIRPath Patch Parameters). Plain application/json is read by its body, as clients send it: an array is a
JSON Patch, a Parameters resource a FHIRPath Patch, any other object a JSON Merge Patch (fhirpy). A patch grows
the resource only within the limits (patch_budget). The patched resource is validated like an update: an invalid
result is 422 and nothing is written. A patch that cannot change anything (no operations) writes no new version.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any, Callable

import jsonpatch
from jsonpatch import JsonPointer  # jsonpatch's own pointers (the jsonpointer package)

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, invalid
from hearth.interactions import conditional
from hearth.interactions.context import Context
from hearth.interactions.request import Caller
from hearth.interactions.crud import check_id_known, read, version_mismatch, write_new
from hearth.interactions.fhirpath_patch import compile_fhirpath_patch, unprocessable
from hearth.interactions.limits import Limits
from hearth.interactions.patch_budget import NOTHING, Budget, Patcher, measure
from hearth.interactions.resources import OFF_LOOP_BYTES, check_type, off_loop, parse_resource
from hearth.storage.base import Assertion, AssertionFailed, Version, VersionConflict

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
PLAIN_JSON = "application/json"
FHIR_JSON_TYPES = frozenset({"application/fhir+json", "application/json+fhir"})
PATCH_TYPES = frozenset({JSON_PATCH, MERGE_PATCH, PLAIN_JSON, *FHIR_JSON_TYPES})

_RETRIES = 20


def compile_patch(body: bytes | Any, content_type: str) -> Patcher:
    """A patch document (bytes, or already parsed) of `content_type` -> the Patcher applying it. 400 for a
    malformed patch, 415 for a media type that is no patch format."""
    compile_document = compiler(content_type)
    if isinstance(body, (bytes, bytearray, str)):
        size = len(body)
        try:
            body = fhir_json.loads(body)
        except fhir_json.JsonSyntaxError as exc:
            raise invalid(f"The patch is not valid JSON: {exc}", code="structure") from None
    else:
        size = measure(body)[1]
    return replace(compile_document(body), size=size)


def compiler(content_type: str) -> Callable[[Any], Patcher]:
    """The compiler of a parsed patch document of `content_type` (415 for a media type that is no patch format:
    checked before a body is read)."""
    if content_type == JSON_PATCH:
        return _json_patch
    if content_type == MERGE_PATCH:
        return _merge_patch
    if content_type == PLAIN_JSON:
        return _by_shape
    if content_type in FHIR_JSON_TYPES:
        return _fhirpath_patch
    raise FhirError(415, "not-supported", f"PATCH content type '{content_type or 'none'}' is not supported; send a "
                                          f"JSON Patch as {JSON_PATCH}, a JSON Merge Patch as {MERGE_PATCH}, or a "
                                          "FHIRPath Patch (a Parameters resource) as application/fhir+json")


def _by_shape(document: Any) -> Patcher:
    """application/json: an array is a JSON Patch, a Parameters a FHIRPath Patch, another object a merge patch."""
    if isinstance(document, list):
        return _json_patch(document)
    if isinstance(document, dict) and document.get("resourceType") == "Parameters":
        return compile_fhirpath_patch(document)
    return _merge_patch(document)


def _fhirpath_patch(document: Any) -> Patcher:
    if isinstance(document, dict) and document.get("resourceType") == "Parameters":
        return compile_fhirpath_patch(document)
    found = (f"a {document['resourceType']}" if isinstance(document, dict) and "resourceType" in document else
             "an object without resourceType" if isinstance(document, dict) else f"a JSON {type(document).__name__}")
    raise invalid(f"A PATCH body of FHIR JSON is a FHIRPath Patch, which is a Parameters resource; this is {found}. "
                  f"A JSON Patch is sent as {JSON_PATCH}, a JSON Merge Patch as {MERGE_PATCH} (in a Bundle entry: a "
                  "Binary of that contentType)", ("resourceType",))


# --- JSON Patch ------------------------------------------------------------------------------------------------

def _json_patch(operations: Any) -> Patcher:
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise invalid("A JSON Patch is an array of operation objects")
    try:  # one JsonPatch per operation, so that a failure names its operation
        steps = [(op, jsonpatch.JsonPatch([op]), _pointer(op, "path"), _pointer(op, "from")) for op in operations]
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException) as exc:
        raise invalid(f"Invalid JSON Patch: {exc}") from None

    def apply(resource: dict[str, Any], budget: Budget) -> dict[str, Any]:
        for number, (operation, step, path, source) in enumerate(steps):
            moved = f"{operation['from']} -> " if source is not None else ""
            label = f"JSON Patch operation {number} ({operation['op']} {moved}{operation['path']})"
            added, removed = _json_change(resource, operation, path, source)
            budget.change(label, str(operation["path"]), added, removed)
            try:
                resource = step.apply(resource, in_place=True)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                reason = "test failed" if isinstance(exc, jsonpatch.JsonPatchTestFailed) else "cannot be applied"
                raise unprocessable(f"{label} {reason}: {str(exc)[:200]}", str(operation["path"])) from None
        return resource
    kinds = {operation["op"] for operation in operations}
    return Patcher(apply, changes=bool(kinds - {"test"}), copies="copy" in kinds)


def _pointer(operation: dict[str, Any], member: str) -> JsonPointer | None:
    """The operation's `path`, or the `from` of a copy or move, as a pointer (None for a `from` it has no use
    for; a missing or invalid one is refused)."""
    if member == "from" and operation["op"] not in ("copy", "move"):
        return None
    if not isinstance(operation.get(member), str):
        raise jsonpatch.InvalidJsonPatch(f"a {operation['op']} operation needs a '{member}' pointer")
    return JsonPointer(operation[member])


def _json_change(resource: Any, operation: dict[str, Any], path: JsonPointer | None,
                 source: JsonPointer | None) -> tuple[Any, Any]:
    """What a JSON Patch operation would add to the resource and take out of it (NOTHING where it cannot
    apply: the operation then fails on its own)."""
    kind = operation["op"]
    if kind == "test" or path is None:
        return NOTHING, NOTHING
    if kind == "remove":
        return NOTHING, _at(resource, path)
    if kind == "replace":
        return operation.get("value", NOTHING), _at(resource, path)
    overwritten = _member(resource, path)  # add, copy and move replace an object member already there
    if kind == "add":
        return operation.get("value", NOTHING), overwritten
    if kind == "copy":
        return (_at(resource, source) if source is not None else NOTHING), overwritten
    return NOTHING, (NOTHING if path == source else overwritten)  # move: the value only changes place


def _at(document: Any, pointer: JsonPointer) -> Any:
    """The value `pointer` names, NOTHING when there is none (`-`, past an array's end, names none)."""
    return NOTHING if pointer.parts[-1:] == ["-"] else pointer.resolve(document, NOTHING)


def _member(document: Any, pointer: JsonPointer) -> Any:
    """The object member `pointer` names (the whole document for ""), NOTHING when there is none."""
    if not pointer.parts:
        return document
    parent = JsonPointer.from_parts(pointer.parts[:-1]).resolve(document, NOTHING)
    return parent.get(pointer.parts[-1], NOTHING) if isinstance(parent, dict) else NOTHING


# --- JSON Merge Patch ------------------------------------------------------------------------------------------

def _merge_patch(document: Any) -> Patcher:
    if not isinstance(document, dict):
        raise invalid("A JSON Merge Patch of a resource is a JSON object (RFC 7396: any other value would replace "
                      "the whole resource)")

    def apply(resource: dict[str, Any], budget: Budget) -> dict[str, Any]:
        _merge(resource, document, budget, resource.get("resourceType", ""))
        return resource
    return Patcher(apply, changes=bool(document))


def _merge(target: dict[str, Any], patch: dict[str, Any], budget: Budget, where: str) -> None:
    """RFC 7396 MergePatch: null removes a member, an object merges into an object, anything else replaces."""
    for name, value in patch.items():
        path = f"{where}.{name}"
        current = target.get(name, NOTHING)
        if value is None:
            if current is not NOTHING:
                budget.change(f"JSON Merge Patch member {path}", path, removed=current)
                del target[name]
        elif isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value, budget, path)
        else:
            new = _without_nulls(value)
            budget.change(f"JSON Merge Patch member {path}", path, new, current)
            target[name] = new


def _without_nulls(value: Any) -> Any:
    """A patch value as it lands where there was no object to merge into: a copy, objects without null members."""
    if isinstance(value, dict):
        return {name: _without_nulls(item) for name, item in value.items() if item is not None}
    return copy.deepcopy(value)


# --- applying ----------------------------------------------------------------------------------------------------

def patched(current: Version, patcher: Patcher, limits: Limits) -> dict[str, Any]:
    """`current` with the patch applied within `limits` and validated (422 when the result is not a valid
    resource)."""
    resource = fhir_json.loads(current.body)
    result = patcher.apply(resource, Budget.of(resource, limits, f"{current.type}/{current.id}"))
    if not isinstance(result, dict) or result.get("resourceType") != current.type:
        raise FhirError(422, "processing", f"The patch changes the resourceType of {current.type}/{current.id}",
                        ("resourceType",))
    if result.get("id") != current.id:
        raise FhirError(422, "processing", f"The patch changes the id of {current.type}/{current.id}",
                        (f"{current.type}.id",))
    try:
        return parse_resource(result, current.type, limits)
    except FhirError as error:
        raise FhirError(422, "processing", "", issues=error.issues) from None


async def patch(ctx: Context, caller: Caller, resource_type: str, resource_id: str, patcher: Patcher,
                if_match: int | None = None) -> Version:
    """PATCH Type/id: the new version (the current one when the patch changes nothing)."""
    check_type(resource_type)
    check_id_known(resource_id)
    for _ in range(_RETRIES):
        current = await read(ctx, resource_type, resource_id)
        try:
            return await _write_patched(ctx, caller, current, patcher, if_match)
        except VersionConflict:
            continue
    raise FhirError(409, "conflict", f"{resource_type}/{resource_id} is being updated concurrently; try again")


async def patch_conditional(ctx: Context, caller: Caller, resource_type: str, criteria: str, patcher: Patcher,
                            if_match: int | None = None) -> Version:
    """PATCH Type?criteria: patch the one match (none: 404, several: 412)."""
    check_type(resource_type)
    query = conditional.parse_criteria(ctx, caller, resource_type, criteria)
    for _ in range(conditional.RETRIES):
        found = await conditional.matches(ctx, query, resource_type, criteria, "a conditional patch")
        if not found:
            raise FhirError(404, "not-found", f"No {resource_type} matches {criteria}; nothing to patch")
        try:
            return await _write_patched(ctx, caller, found[0], patcher, if_match,
                                        (Assertion(query, conditional.ids(found)),))
        except (VersionConflict, AssertionFailed):
            continue
    raise conditional.lost_race(resource_type, criteria)


async def _write_patched(ctx: Context, caller: Caller, current: Version, patcher: Patcher, if_match: int | None,
                         assertions: tuple[Assertion, ...] = ()) -> Version:
    if if_match is not None and current.version_id != if_match:
        raise version_mismatch(current.type, current.id, if_match, current)
    large = _off_loop(current, patcher)
    resource = await off_loop(large, patched, current, patcher, ctx.limits)
    if not patcher.changes:  # R4: a patch without operations changes nothing, so no new version
        return current
    try:
        return await write_new(ctx, caller, current.type, current.id, resource, current.version_id, assertions, large)
    except VersionConflict as conflict:
        if if_match is not None:
            raise version_mismatch(current.type, current.id, if_match, None, conflict.actual) from None
        raise


def _off_loop(current: Version, patcher: Patcher) -> bool:
    """Whether applying `patcher` to `current` is worth a worker thread: a big resource or patch, or copies."""
    return patcher.copies or len(current.body) + patcher.size > OFF_LOOP_BYTES
