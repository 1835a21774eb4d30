"""The CapabilityStatement, generated in one place from what the server really supports."""

from __future__ import annotations

from typing import Any, Sequence

from capability.resource_types import RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"

# Per-type interactions that work for every resource type.
TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create", "patch")
SYSTEM_INTERACTIONS = ("history-system", "batch")
PATCH_FORMATS = ("application/json-patch+json", "application/fhir+json")  # JSON Patch; FHIRPath Patch


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"


def _subscription_fields(topics: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Subscription: the topics (Backport IG extension), channel types, and the $status / $events operations."""
    return {
        "extension": [{"url": f"{_BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                       "valueCanonical": topic["url"]} for topic in topics],
        "documentation": "R4 criteria Subscriptions and topic-based Subscriptions (Subscriptions R5 Backport IG). "
                         "Channel types: rest-hook (payload empty or application/fhir+json; backport content "
                         "empty, id-only, full-resource), websocket (bind <id> at [base]/$subscription-ws). "
                         "Topics: " + "; ".join(f"{t['url']} ({t['title']})" for t in topics),
        "operation": [
            {"name": "status", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-status"},
            {"name": "events", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-events"},
        ],
    }


def capability_statement(base_url: str, published: str, search: Any | None = None, *, transactions: bool = True,
                         conditional_delete_multiple: bool = False,
                         subscription_topics: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    """The server's CapabilityStatement; `search` (a callable type -> rest.resource search fields) adds search.

    `transactions`: the store commits several writes atomically (else transaction Bundles are refused).
    `subscription_topics`: the SubscriptionTopics ({url, title}) Subscriptions may use (Backport IG)."""
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
        if resource_type == "Subscription" and subscription_topics:
            resource.update(_subscription_fields(subscription_topics))
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
        **({"instantiates": [f"{_BACKPORT}/CapabilityStatement/backport-subscription-server-r4"]}
           if subscription_topics else {}),
        "rest": [{
            "mode": "server",
            **({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                               "valueUrl": "ws" + base_url.removeprefix("http") + "/$subscription-ws"}]}
               if subscription_topics else {}),
            "resource": resources,
            "interaction": [{"code": code}
                            for code in SYSTEM_INTERACTIONS + (("transaction",) if transactions else ())],
        }],
    }
