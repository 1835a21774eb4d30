"""`rest.security` of the CapabilityStatement: SMART on FHIR, with the authorization server's endpoints, and a
plain warning when authorization is off."""

from __future__ import annotations

from typing import Any

_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def rest_security(base_url: str, required: bool) -> dict[str, Any]:
    uris = {"authorize": f"{base_url}/auth/authorize", "token": f"{base_url}/auth/token",
            "introspect": f"{base_url}/auth/introspect", "revoke": f"{base_url}/auth/revoke"}
    description = ("SMART on FHIR: every request needs a bearer access token (see "
                   f"{base_url}/.well-known/smart-configuration)." if required else
                   "WARNING: authorization is OFF (HEARTH_AUTH=open, listening on loopback): requests without a "
                   "token may read and write everything. Tokens that are presented are still enforced.")
    return {
        "extension": [{"url": _OAUTH_URIS, "extension": [{"url": name, "valueUri": uri}
                                                        for name, uri in uris.items()]}],
        "cors": True,
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
        "description": description,
    }
