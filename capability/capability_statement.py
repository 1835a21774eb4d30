"""The CapabilityStatement, generated in one place from what the server really supports."""

from __future__ import annotations

from typing import Any, Sequence

from hearth.capability.resource_types import RESOURCE_TYPES

SOFTWARE_VERSION = "0.1.0"

# Per-type interactions that work for every resource type.
TYPE_INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create",
                     "search-type", "patch")
SYSTEM_INTERACTIONS = ("history-system", "search-system", "batch")
PATCH_FORMATS = ("application/json-patch+json", "application/merge-patch+json",
                 "application/fhir+json")  # JSON Patch; JSON Merge Patch; FHIRPath Patch


_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"


def _subscription_fields(topics: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Subscription: the topics (Backport IG extension), channel types, and the $status / $events operations."""
    return {
        "extension": [{"url": f"{_BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                       "valueCanonical": topic["url"]} for topic in topics],
        "documentation": "R4 criteria Subscriptions and topic-based Subscriptions (Subscriptions R5 Backport IG). "
                         "Channel types: rest-hook (payload empty or application/fhir+json; backport content "
                         "empty, id-only, full-resource), websocket ([base]/$subscription-ws: bind <id>, or "
                         "bind-with-token <token from $get-ws-binding-token>). "
                         "Topics: " + "; ".join(f"{t['url']} ({t['title']})" for t in topics),
        "operation": [
            {"name": "status", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-status"},
            {"name": "events", "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-events"},
            {"name": "get-ws-binding-token",
             "definition": f"{_BACKPORT}/OperationDefinition/backport-subscription-get-ws-binding-token"},
        ],
    }


def capability_statement(base_url: str, published: str, registry: Any, *, transactions: bool = True,
                         conditional_delete_multiple: bool = False,
                         subscription_topics: Sequence[dict[str, str]] = (),
                         security: dict[str, Any] | None = None,
                         operations: Sequence[dict[str, Any]] = (),
                         instantiates: Sequence[str] = ()) -> dict[str, Any]:
    """The server's CapabilityStatement; `registry` (search/registry.py) gives each type's search.

    `transactions`: the store commits several writes atomically (else transaction Bundles are refused).
    `subscription_topics`: the SubscriptionTopics ({url, title}) Subscriptions may use (Backport IG).
    `security`: `rest.security` (SMART on FHIR: security/capability.py).
    `operations`: what the operation modules serve, each {"name", "definition", "type" (None: system level)}.
    `instantiates`: further CapabilityStatements the server conforms to (e.g. Bulk Data)."""
    resources = []
    for resource_type in sorted(RESOURCE_TYPES):
        interactions = list(TYPE_INTERACTIONS)
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
        resource.update(search_fields(registry, resource_type))
        if resource_type == "Subscription" and subscription_topics:
            resource.update(_subscription_fields(subscription_topics))
        served = _operations(operations, resource_type)
        if served:
            resource["operation"] = resource.get("operation", []) + served
        resources.append(resource)
    conforms = [f"{_BACKPORT}/CapabilityStatement/backport-subscription-server-r4"] if subscription_topics else []
    conforms += list(instantiates)
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
        **({"instantiates": conforms} if conforms else {}),
        "rest": [{
            "mode": "server",
            **({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-websocket",
                               "valueUrl": "ws" + base_url.removeprefix("http") + "/$subscription-ws"}]}
               if subscription_topics else {}),
            **({"security": security} if security else {}),
            "resource": resources,
            "interaction": [{"code": code}
                            for code in SYSTEM_INTERACTIONS + (("transaction",) if transactions else ())],
            **({"operation": _operations(operations, None)} if _operations(operations, None) else {}),
        }],
    }


def _operations(operations: Sequence[dict[str, Any]], resource_type: str | None) -> list[dict[str, str]]:
    return [{"name": o["name"], "definition": o["definition"]} for o in operations if o.get("type") == resource_type]


# What the search engine accepts per parameter type (search/parse.py), told in each searchParam's documentation.
MODIFIERS = {
    "string": ("missing", "exact", "contains"),
    "token": ("missing", "text", "not", "of-type", "in", "not-in", "above", "below"),
    "reference": ("missing", "[type]", "identifier"),
    "uri": ("missing", "above", "below"),
    "date": ("missing",), "number": ("missing",), "quantity": ("missing",), "composite": ("missing",),
    "special": (),
}
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def search_fields(registry: Any, resource_type: str) -> dict[str, Any]:
    """`searchParam`, `searchInclude` and `searchRevInclude` of one type, from the registry's supported parameters."""
    params = registry.params(resource_type)
    search_params = []
    for code, param in sorted(params.items()):
        notes = [f"modifiers: {', '.join(MODIFIERS.get(param.type, ()))}"]
        if param.type in ("date", "number", "quantity"):
            notes.append(f"prefixes: {', '.join(PREFIXES)}")
        if param.type == "reference":
            notes.append("chaining and _has supported")
        search_params.append({"name": code, "definition": param.url, "type": param.type,
                              "documentation": "; ".join(notes)})
    includes = ["*"] + [f"{resource_type}:{code}" for code, param in sorted(params.items())
                        if param.type == "reference"]
    revincludes = sorted(
        f"{source}:{code}" for source in RESOURCE_TYPES for code, param in registry.params(source).items()
        if param.type == "reference" and (resource_type in param.target or not param.target))
    return {"searchParam": search_params, "searchInclude": includes, "searchRevInclude": revincludes}

