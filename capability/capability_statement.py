"""The CapabilityStatement, generated in one place from what the server really supports."""

from __future__ import annotations

from typing import Any

from capability.resource_types import RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"

# Per-type interactions that work for every resource type.
TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create")
SYSTEM_INTERACTIONS = ("history-system",)


def capability_statement(base_url: str, published: str, search: Any | None = None) -> dict[str, Any]:
    """The server's CapabilityStatement; `search` (a callable type -> rest.resource search fields) adds search."""
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
            "conditionalCreate": False,
            "conditionalRead": "full-support",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
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
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
        }],
    }
