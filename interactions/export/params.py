"""A kick-off's parameters (query string, or a Parameters body for POST) read into a job's plan.

Per Bulk Data 2.0: `_outputFormat` (NDJSON only), `_since`, `_type`, `_typeFilter`, `_elements`, `patient`
(POST, Patient and Group levels). `includeAssociatedData` names data Hearth does not produce: refused (the spec's
SHOULD for values a server cannot honour). Other parameters are ignored, or refused under `Prefer: handling=strict`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, invalid
from hearth.capability.resource_types import RESOURCE_TYPES, is_resource_type
from hearth.interactions.context import Context
from hearth.interactions.request import Request
from hearth.interactions.search import parse_query
from hearth.search.compartments import COMPARTMENTS

FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient",
                   "includeAssociatedData"})
# AuditEvents live in the audit log, not the store (interactions/dispatcher.py); the others are never stored
_NOT_EXPORTED = frozenset({"AuditEvent", "Parameters", "OperationOutcome"})
PATIENT_TYPES = tuple(sorted(COMPARTMENTS["Patient"]))


def plan(ctx: Context, request: Request, level: str) -> dict[str, Any]:
    """The plan of the export `request` asks for at `level` (system | patient | group): 400 for what it cannot
    be, 403 for named types the caller may not read."""
    params = [*request.params, *_body_params(request.body)]
    unknown = sorted({name for name, _ in params if name not in KNOWN})
    if unknown and request.strict:
        raise invalid(f"Unsupported $export parameter(s): {', '.join(unknown)} (Prefer: handling=strict)")
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)
    for value in values.get("_outputFormat", ()):
        if value.replace(" ", "+") not in FORMATS:  # a literal '+' in a query string arrives as a space
            raise invalid(f"_outputFormat '{value}' is not supported; use {FORMATS[0]}", ("_outputFormat",))
    if values.get("includeAssociatedData"):
        raise invalid("includeAssociatedData is not supported: Hearth exports no associated data; leave it out",
                      ("includeAssociatedData",))
    patients = [_patient_id(value) for value in values.get("patient", ())]
    if patients and level == "system":
        raise invalid("The patient parameter applies to Patient and Group exports only", ("patient",))
    types = _types(ctx, request, level, _listed(values.get("_type", ())))
    return {"level": level, "types": types, "since": _since(values.get("_since", ())),
            "filters": _filters(ctx, types, values.get("_typeFilter", ())),
            "elements": _elements(values.get("_elements", ())), "patients": patients or None}


def _body_params(body: Any) -> list[tuple[str, str]]:
    """A POST kick-off's Parameters as (name, value) pairs (a reference as its `reference`)."""
    if body is None:
        return []
    resource = fhir_json.loads(body) if isinstance(body, bytes) else body
    if not isinstance(resource, dict) or resource.get("resourceType") != "Parameters":
        raise invalid("A POST $export takes a Parameters resource")
    pairs = []
    for parameter in resource.get("parameter") or ():
        name = parameter.get("name", "")
        value = next((v for key, v in parameter.items() if key.startswith("value")), None)
        if isinstance(value, dict):
            value = value.get("reference")
        if not isinstance(value, str):
            raise invalid(f"Parameter '{name}' has no value Hearth can read", ("Parameters.parameter",))
        pairs.append((name, value))
    return pairs


def _listed(values: list[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _types(ctx: Context, request: Request, level: str, listed: list[str]) -> list[str]:
    """The types to export: those named (each must be one the caller may read: 403), else every type the caller
    may read (of the Patient compartment for Patient and Group exports)."""
    grant = request.caller.grant
    for resource_type in listed:
        if not is_resource_type(resource_type) or resource_type in _NOT_EXPORTED:
            raise invalid(f"_type '{resource_type}' is not a resource type Hearth exports", ("_type",))
        if level != "system" and resource_type not in COMPARTMENTS["Patient"]:
            raise invalid(f"{resource_type} is not in the Patient compartment: a {level} export cannot hold it",
                          ("_type",))
        if grant is not None and not grant.covers(resource_type, "r"):
            raise FhirError(403, "forbidden", f"The access token grants no read access to {resource_type}")
    if listed:
        return sorted(set(listed))
    candidates = PATIENT_TYPES if level != "system" else sorted(RESOURCE_TYPES - _NOT_EXPORTED)
    return [t for t in candidates if grant is None or grant.covers(t, "r")]


def _since(values: list[str]) -> str | None:
    if not values:
        return None
    value = values[-1].replace(" ", "+")  # a literal '+' of a time zone arrives as a space
    try:
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"_since '{value}' is not an instant (like 2026-01-01T00:00:00Z)", ("_since",)) from None
    if instant.tzinfo is None or "T" not in value:
        raise invalid(f"_since '{value}' needs a time and a time zone", ("_since",))
    return value


def _filters(ctx: Context, types: list[str], values: list[str]) -> dict[str, list[str]]:
    """`_typeFilter` queries per type (several for one type: any of them), each checked as a search (400)."""
    filters: dict[str, list[str]] = {}
    for value in values:
        resource_type, _, query = value.partition("?")
        if resource_type not in types:
            raise invalid(f"_typeFilter '{value}' is for a type this export does not hold", ("_typeFilter",))
        params = parse_qsl(query, keep_blank_values=True)
        if any(name.startswith("_") and name not in ("_id", "_lastUpdated", "_tag", "_profile", "_security")
               for name, _ in params):
            raise invalid(f"_typeFilter '{value}': only search parameters that choose resources may be used",
                          ("_typeFilter",))
        parse_query(ctx, (resource_type,), params, strict=True)  # a bad filter is a 400 now, not a failed job
        filters.setdefault(resource_type, []).append(query)
    return filters


def _elements(values: list[str]) -> list[str]:
    elements = _listed(values)
    for element in elements:
        head, _, rest = element.partition(".")
        if rest and (not is_resource_type(head) or "." in rest):
            raise invalid(f"_elements '{element}': name an element (code) or a type's element (Observation.code)",
                          ("_elements",))
    return elements


def _patient_id(reference: str) -> str:
    resource_type, _, patient_id = reference.rpartition("/")
    if not resource_type.endswith("Patient") or not patient_id:
        raise invalid(f"patient '{reference}' is not a Patient reference", ("patient",))
    return patient_id
