"""`[type]/$validate` and `[type]/[id]/$validate`: check a resource as a create, update or delete would, and answer
an OperationOutcome (200 with the problems as issues, per R4), storing nothing.

The body is the resource itself or a Parameters with `resource`, `mode` (create | update | delete) and `profile`
(`mode` and `profile` may also come in the query string). Only the base R4 profile of the type is known.
"""

from __future__ import annotations

from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, Issue, operation_outcome
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.capability.validation import TooManyElements, validate_resource
from hearth.interactions import crud, operations
from hearth.interactions.context import Context
from hearth.interactions.operations.arguments import body_resource, parameters
from hearth.interactions.request import Outcome, Request

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
_MODES = ("create", "update", "delete")


def install(ctx: Context) -> None:
    """Register this module's operations on the context."""
    for resource_type in RESOURCE_TYPES:
        ctx.operations[(resource_type, "$validate")] = validate
    operations.served(ctx, "validate", DEFINITION)  # on every type: listed once, at rest.operation


async def validate(ctx: Context, request: Request) -> Outcome:
    resource_type = request.type or ""
    body = body_resource(request)
    inputs = dict(parameters(request, body))
    mode = inputs.get("mode", "create")
    if mode not in _MODES:
        raise FhirError(400, "invalid", f"mode is one of {', '.join(_MODES)}, not {mode!r}", ("mode",))
    resource = inputs.get("resource") if body is not None and body.get("resourceType") == "Parameters" else body
    issues = _profile(resource_type, inputs.get("profile"))
    if mode == "delete":
        issues += await _deletable(ctx, request)
    elif resource is None:
        raise FhirError(400, "required", f"$validate in mode {mode} needs a resource: the body, or a Parameters "
                                         "with a `resource` parameter")
    else:
        issues += _content(ctx, resource_type, resource)
        if mode == "update":
            issues += _same_id(request, resource)
    if not issues:
        issues = [Issue("information", "informational", "No problems found")]
    return Outcome(200, body=fhir_json.dumps(operation_outcome(issues)))


def _profile(resource_type: str, profile: Any) -> list[Issue]:
    """A profile other than the type's base R4 one (a version `|4.0.1` allowed) cannot be checked here."""
    if profile is None or str(profile).partition("|")[0] == BASE_PROFILE + resource_type:
        return []
    return [Issue("error", "not-supported", f"Hearth validates against the base R4 profile of {resource_type} "
                                            f"({BASE_PROFILE}{resource_type}) only, not {profile}", ("profile",))]


def _content(ctx: Context, resource_type: str, resource: Any) -> list[Issue]:
    """What a create or update would refuse in the resource itself."""
    if not isinstance(resource, dict):
        return [Issue("error", "structure", "The resource must be a JSON object")]
    found = resource.get("resourceType")
    if found != resource_type:
        return [Issue("error", "invalid", f"The resource is a {found}, but the URL is for {resource_type}",
                      ("resourceType",))]
    try:
        validate_resource(resource, ctx.limits.max_resource_elements)
    except TooManyElements:
        return [Issue("error", "too-costly", f"The resource holds more than {ctx.limits.max_resource_elements:,} "
                                             "JSON values (HEARTH_MAX_RESOURCE_ELEMENTS)")]
    except FhirError as error:
        return list(error.issues)
    return []


def _same_id(request: Request, resource: dict[str, Any]) -> list[Issue]:
    """An update names the resource it updates: the body's id is the URL's."""
    if request.id is None:
        return [Issue("error", "required", "mode=update validates at instance level: [type]/[id]/$validate")]
    if resource.get("id") != request.id:
        return [Issue("error", "invalid", f"The id in the body ({resource.get('id')!r}) differs from the id in "
                                          f"the URL ('{request.id}')", (f"{request.type}.id",))]
    return []


async def _deletable(ctx: Context, request: Request) -> list[Issue]:
    """A delete needs a current resource the caller may see, and a scope that lets it delete that one."""
    if request.id is None:
        return [Issue("error", "required", "mode=delete validates at instance level: [type]/[id]/$validate")]
    try:
        current = await crud.read(ctx, request.type or "", request.id)
    except FhirError as error:
        if error.status == 410 and ctx.policy.sees_all(request):
            return list(error.issues)
        return [Issue("error", "not-found", f"{request.type}/{request.id} is not known")]
    if ctx.policy.after(request, current) is None:
        return [Issue("error", "not-found", f"{request.type}/{request.id} is not known")]
    try:
        await ctx.policy.admit(request.caller, [crud.tombstone_write(current)])
    except FhirError as error:
        return list(error.issues)
    return []
