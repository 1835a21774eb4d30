"""The connectors over HTTP, for the `admin` role (and anyone while authorization is open), through the dispatcher
(audited like every operation):

- `GET [base]/$connectors[?name=NAME]`: each connector's status, as `hearth connector status` prints it;
- `GET [base]/$connector-dead-letters?connector=NAME[&id=ID]`: its dead letters (or one);
- `POST [base]/$connector-dead-letters` with a Parameters body (`connector`, `action` retry | discard, and `id`,
  or `all` = true to retry them all).
Answers are Parameters resources (one `connector` or `dead-letter` parameter each, its fields as parts).
"""

from __future__ import annotations

from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.connectors.hl7v2.frame import Header, read_header
from hearth.interactions.context import Context
from hearth.interactions.operations.arguments import named
from hearth.interactions.request import Outcome, Request


def install(ctx: Context, connectors: Any) -> None:
    """Register the operations for the process's Connectors (connectors/runner.py)."""

    async def status(ctx: Context, request: Request) -> Outcome:
        _admin(request)
        name = named(request).get("name")
        try:
            found = await connectors.status(name)
        except KeyError as error:
            raise FhirError(404, "not-found", str(error.args[0])) from None
        return _parameters("connector", found)

    async def dead_letters(ctx: Context, request: Request) -> Outcome:
        _admin(request)
        arguments = named(request)
        name = arguments.get("connector")
        if not name:
            raise FhirError(400, "required", "Name the connector: connector=NAME")
        try:
            action, letter = arguments.get("action"), arguments.get("id")
            if request.body is None:  # GET (a POST without a body too): reading only
                if action is not None:
                    raise FhirError(400, "invalid", "Retry and discard are a POST with a Parameters body")
                return _parameters("dead-letter", await connectors.dead_letters(name, letter))
            if action == "retry" and (letter or arguments.get("all") == "true"):
                return _parameters("result", await connectors.retry(name, letter))
            if action == "discard" and letter:
                if not await connectors.discard(name, letter):
                    raise FhirError(404, "not-found", f"No dead letter {letter} for connector {name}")
                return _parameters("result", [{"id": letter, "result": "discarded"}])
        except KeyError as error:
            raise FhirError(404, "not-found", str(error.args[0])) from None
        raise FhirError(400, "invalid", "action is retry (with id, or all=true) or discard (with id)")

    async def hl7v2(ctx: Context, request: Request) -> Outcome:
        name = dict(request.params).get("connector", "")
        connector = connectors.connectors.get(name)
        config = getattr(connector, "config", None)
        if connector is None or getattr(config, "kind", "") != "hl7v2-mllp" or not config.http:
            raise FhirError(404, "not-found", f"No HL7 v2 connector named {name!r} takes messages over HTTP")
        grant = request.caller.grant
        if grant is not None and not grant.is_admin and not all(
                grant.covers(t, "c") and grant.covers(t, "u") for t in config.types):
            raise FhirError(403, "forbidden", f"Sending HL7 v2 to {name} needs the admin role or create and update "
                                              f"scopes for {', '.join(config.types)}")
        answer = await connector.receiver.answer(bytes(request.body or b""))
        header = read_header(answer, config.charset) if answer else None
        charset = header.charset if isinstance(header, Header) else "utf-8"
        return Outcome(200, body=answer or b"",
                       headers={"Content-Type": f"x-application/hl7-v2+er7; charset={charset}"})

    ctx.operations[(None, "$connectors")] = status
    ctx.operations[(None, "$hl7v2")] = hl7v2
    ctx.operations[(None, "$connector-dead-letters")] = dead_letters


def _admin(request: Request) -> None:
    grant = request.caller.grant
    if grant is not None and "admin" not in grant.roles:
        raise FhirError(403, "forbidden", "The connectors are for the admin role")


def _parameters(name: str, items: list[dict[str, Any]]) -> Outcome:
    resource: dict[str, Any] = {"resourceType": "Parameters"}
    if items:  # FHIR JSON has no empty arrays
        resource["parameter"] = [{"name": name, "part": _parts(item)} for item in items]
    return Outcome(200, body=fhir_json.dumps(resource))


def _parts(document: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for key, value in document.items():
        if value is None:
            continue
        if isinstance(value, dict):
            parts.append({"name": key, "part": _parts(value)})
        elif isinstance(value, list):
            parts += [{"name": key, "part": _parts(item)} if isinstance(item, dict) else
                      {"name": key, **_value(item)} for item in value]
        else:
            parts.append({"name": key, **_value(value)})
    return parts


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    return {"valueString": str(value)}
