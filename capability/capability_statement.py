"""The CapabilityStatement, generated in one place from what the server really supports."""

from __future__ import annotations

from typing import Any

from capability.resource_types import RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"

# Per-type interactions that work for every resource type.
TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create", "patch")
SYSTEM_INTERACTIONS = ("history-system", "batch")
PATCH_FORMATS = ("application/json-patch+json", "application/fhir+json")  # JSON Patch; FHIRPath Patch


def capability_statement(base_url: str, published: str, search: Any | None = None, *, transactions: bool = True,
                         conditional_delete_multiple: bool = False) -> dict[str, Any]:
    """The server's CapabilityStatement; `search` (a callable type -> rest.resource search fields) adds search.

    `transactions`: the store commits several writes atomically (else transaction Bundles are refused)."""
    resources = []
    for resource_type in sorted(RESOURCE_TYPES):
        interactions = list(TYPE_INTERACTIONS) + (["search-type"] if search else [])
        resource: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "multiple" if conditional_delete_multiple else "single",
        }
        if search:
            resource.update(search(resource_type))
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Hearth",
        "kind": "instance",
        "software": {"name": "Hearth", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Hearth FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json", "application/fhir+xml", "xml"],
        "patchFormat": list(PATCH_FORMATS),
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": code}
                            for code in SYSTEM_INTERACTIONS + (("transaction",) if transactions else ())],
        }],
    }
