"""Identity of what a message names (design note b9): a patient is the stored Patient with its PID-3 identifier
(whoever wrote it; a merged patient leads to its survivor), an encounter the Encounter with its PV1-19 identifier
within that patient (and the patients merged with it). Everything else has the id the conversion computed.

What a message says is merged into what is stored by Hearth's rules:
- ADT messages are authoritative for the patient and the encounter: each top-level element they give replaces
  the stored one, the others are kept; identifiers are the union (a merged patient's stay); `link` and `active`
  are the merge's business and kept.
- Results, vaccinations and appointments (ORU, VXU, SIU) make a patient or an encounter they name if there is
  none, and never change one there is: a lab's short PID must not overwrite the registration's demographics.
- An encounter that is finished, cancelled or entered-in-error stays so, unless the event itself says otherwise
  (A03 discharge, A11 cancel, A13 cancel discharge): an A08 after the A03 does not reopen it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hearth.capability import fhir_json
from hearth.connectors.sync import current
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Caller, Request

CLOSED = frozenset({"finished", "cancelled", "entered-in-error"})
STATUS_EVENTS = frozenset({"A03", "A11", "A13"})  # events whose encounter status wins over a closed one
KEPT = frozenset({"resourceType", "id", "meta", "identifier", "link", "active"})


class Ambiguous(Exception):
    """Several stored resources match one identifier: a person must decide (a dead letter)."""


@dataclass
class Match:
    """A stored resource a message's resource lands on."""

    id: str
    version: int
    resource: dict[str, Any]


def token(identifier: dict[str, Any]) -> str:
    """An Identifier as a token search value (`system|value`, the search's special characters escaped)."""
    def escaped(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    value = escaped(str(identifier.get("value", "")))
    system = identifier.get("system")
    return f"{escaped(system)}|{value}" if system else f"|{value}"  # "|v": no system, not any system


async def search(ctx: Context, caller: Caller, resource_type: str, params: list[tuple[str, str]]
                 ) -> list[dict[str, Any]]:
    """The current resources a search finds, asked as the connector (so its grant and the audit apply)."""
    outcome = await dispatch(ctx, Request("search-type", caller, resource_type,
                                          params=tuple(params) + (("_count", "20"),)))
    bundle = fhir_json.loads(outcome.body or b"{}", trusted=True)
    return [entry["resource"] for entry in bundle.get("entry", ())
            if (entry.get("search") or {}).get("mode", "match") == "match" and "resource" in entry]


def _match(resource: dict[str, Any]) -> Match:
    return Match(resource["id"], int(resource["meta"]["versionId"]), resource)


async def find_patient(ctx: Context, caller: Caller, identifiers: list[dict[str, Any]],
                       follow: bool = True) -> Match | None:
    """The stored Patient with the match identifier (the first); with `follow`, a merged one's survivor."""
    if not identifiers:
        return None
    found = await search(ctx, caller, "Patient", [("identifier", token(identifiers[0]))])
    if not follow:  # the patient the identifier was first given to, not a survivor that took it over in a merge
        ids = {f"Patient/{patient['id']}" for patient in found}
        return _one([p for p in found if not set(linked(p)[1:]) & ids], identifiers[0])
    survivors: dict[str, dict[str, Any]] = {}
    for patient in found:
        seen = {patient["id"]}
        while (nxt := _replaced_by(patient)) is not None and nxt not in seen:
            seen.add(nxt)
            patient = await current(ctx, caller, "Patient", nxt) or patient
            if patient["id"] != nxt:
                break
        survivors[patient["id"]] = patient
    return _one(list(survivors.values()), identifiers[0])


def _one(found: list[dict[str, Any]], identifier: dict[str, Any]) -> Match | None:
    if len(found) > 1:
        raise Ambiguous(f"{len(found)} patients have the identifier {token(identifier)}: "
                        f"{', '.join(sorted('Patient/' + p['id'] for p in found))}")
    return _match(found[0]) if found else None


def _replaced_by(patient: dict[str, Any]) -> str | None:
    for link in patient.get("link", ()):
        if link.get("type") == "replaced-by":
            reference = (link.get("other") or {}).get("reference", "")
            if reference.startswith("Patient/"):
                return reference.split("/", 1)[1]
    return None


def linked(patient: dict[str, Any]) -> list[str]:
    """`Patient/id` of the patient and of those merged into it (link type replaces)."""
    return [f"Patient/{patient['id']}"] + [
        (link.get("other") or {}).get("reference", "") for link in patient.get("link", ())
        if link.get("type") == "replaces" and (link.get("other") or {}).get("reference", "").startswith("Patient/")]


async def find_encounter(ctx: Context, caller: Caller, identifier: dict[str, Any], subjects: list[str]
                         ) -> Match | None:
    """The stored Encounter with the visit number, of one of `subjects`."""
    found = await search(ctx, caller, "Encounter", [("identifier", token(identifier)),
                                                    ("subject", ",".join(subjects))])
    if len(found) > 1:
        raise Ambiguous(f"{len(found)} encounters have the visit number {token(identifier)}")
    return _match(found[0]) if found else None


def merged(stored: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    """What an authoritative (ADT) message makes of a stored patient or encounter: its top-level elements replace
    the stored ones, identifiers are the union, link and active are kept."""
    result = copy.deepcopy(stored)
    for key, value in incoming.items():
        if key not in KEPT:
            result[key] = value
    identifiers = union_identifiers(stored.get("identifier", []), incoming.get("identifier", []))
    if identifiers:
        result["identifier"] = identifiers
    meta = dict(stored.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if "source" in (incoming.get("meta") or {}):
        meta["source"] = incoming["meta"]["source"]
    result["meta"] = meta
    return result


def encounter_merged(stored: dict[str, Any], incoming: dict[str, Any], event: str) -> dict[str, Any]:
    """`merged`, and a closed encounter stays closed unless the event decides its status."""
    result = merged(stored, incoming)
    if stored.get("status") in CLOSED and event not in STATUS_EVENTS:
        result["status"] = stored["status"]
        end = (stored.get("period") or {}).get("end")
        if end and not (result.get("period") or {}).get("end"):
            result["period"] = {**(result.get("period") or {}), "end": end}
    return result


def _same_identifier(one: dict[str, Any], other: dict[str, Any]) -> bool:
    return one.get("system") == other.get("system") and one.get("value") == other.get("value")


def union_identifiers(stored: list[dict[str, Any]], added: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`stored` followed by those of `added` it lacks (by system and value)."""
    result = list(stored)
    for identifier in added:
        if not any(_same_identifier(identifier, known) for known in result):
            result.append(identifier)
    return result
