"""An operation's input parameters, from the query string and a Parameters body alike, and its Parameters answers."""

from __future__ import annotations

from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions.request import Outcome, Request


def body_resource(request: Request) -> dict[str, Any] | None:
    """The request's body parsed (None: there is none); 400 when it is not a JSON object."""
    body = request.body
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray)):
        try:
            body = fhir_json.loads(body)
        except fhir_json.JsonSyntaxError as exc:
            raise FhirError(400, "structure", f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "The body must be a JSON object (a FHIR resource)")
    return body


def parameters(request: Request, body: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """(name, value) of every input: the query string's as text, then a Parameters body's (`value[x]` as given,
    a `resource` parameter's resource)."""
    found: list[tuple[str, Any]] = list(request.params)
    if body is None or body.get("resourceType") != "Parameters":
        return found
    for parameter in body.get("parameter") or ():
        if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
            continue
        value = parameter.get("resource")
        if value is None:
            value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        if value is not None:
            found.append((parameter["name"], value))
    return found


def named(request: Request) -> dict[str, str]:
    """The inputs by name, as text (a repeated one: its last): the query string's and a Parameters body's
    primitive values; 400 for a body that is not a Parameters resource."""
    body = body_resource(request)
    if body is not None and body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "The body of this operation is a Parameters resource")
    return {name: text(value) for name, value in parameters(request, body) if not isinstance(value, dict)}


def text(value: Any) -> str:
    """A parameter's value as the query string would carry it."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def answer(parameters: list[dict[str, Any]]) -> Outcome:
    """A 200 answering a Parameters resource of `parameters`."""
    resource: dict[str, Any] = {"resourceType": "Parameters"}
    if parameters:  # FHIR JSON has no empty arrays
        resource["parameter"] = parameters
    return Outcome(200, body=fhir_json.dumps(resource))
