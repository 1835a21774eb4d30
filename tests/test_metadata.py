"""The CapabilityStatement tells the truth; health endpoints answer."""

from __future__ import annotations

from hearth.capability.resource_types import RESOURCE_TYPES


async def test_capability_statement(client):
    response = await client.get("/metadata")
    assert response.status_code == 200
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1" and statement["kind"] == "instance"
    assert "application/fhir+json" in statement["format"]
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == set(RESOURCE_TYPES) and len(resources) == 146
    patient = resources["Patient"]
    codes = {i["code"] for i in patient["interaction"]}
    assert {"read", "vread", "update", "delete", "history-instance", "history-type", "create"} <= codes
    assert patient["versioning"] == "versioned-update" and patient["updateCreate"] is True
    assert patient["conditionalRead"] == "full-support"
    assert {"code": "history-system"} in statement["rest"][0]["interaction"]


async def test_health(client):
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
