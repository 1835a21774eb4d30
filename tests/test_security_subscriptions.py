"""Subscriptions are held to their owner's grant: they match and notify only what the client that wrote them may
read, and a client cannot claim another owner."""

from __future__ import annotations

import json

import pytest

from security_helpers import FHIR_JSON, observation, secured  # noqa: F401 (fixture)
from subscription_helpers import Receiver, r4_subscription

OWNER = "http://hearth.dev/fhir/StructureDefinition/subscription-owner"


@pytest.fixture
async def receiver():
    server = await Receiver().start()
    yield server
    await server.stop()


async def test_notifications_carry_only_what_the_owner_may_read(secured, receiver):
    client = secured.client
    patient_app = await secured.token("patient/Subscription.cr patient/Observation.rs", patient="p1")
    body = r4_subscription("Observation?code=8867-4", receiver.url + "/fhir", payload="application/fhir+json")
    created = await client.post("/Subscription", json=body, headers={**FHIR_JSON, **patient_app})
    assert created.status_code == 201, created.text
    admin = {**FHIR_JSON, **await secured.token("system/*.cruds", name="seeder")}
    for resource in (observation("other-1", "p2", "laboratory"), observation("mine-1", "p1", "laboratory")):
        assert (await client.put(f"/Observation/{resource['id']}", json=resource, headers=admin)).status_code == 201
    await receiver.wait_for(1)
    for resource in (observation("other-2", "p2", "laboratory"), observation("mine-2", "p1", "laboratory")):
        assert (await client.put(f"/Observation/{resource['id']}", json=resource, headers=admin)).status_code == 201
    received = await receiver.wait_for(2)
    assert sorted(r.path for r in received) == ["/fhir/Observation/mine-1", "/fhir/Observation/mine-2"]
    assert all(json.loads(r.body)["subject"]["reference"] == "Patient/p1" for r in received)


async def test_a_client_cannot_claim_another_owner(secured, receiver):
    client = secured.client
    patient_app = await secured.token("patient/Subscription.cr", patient="p1")
    forged = {"url": OWNER, "valueString": json.dumps({"scope": "system/*.rs", "client": "admin"})}
    body = {**r4_subscription("Observation?code=8867-4", receiver.url + "/hook"), "extension": [forged]}
    created = (await client.post("/Subscription", json=body, headers={**FHIR_JSON, **patient_app})).json()
    [owner] = [e for e in created["extension"] if e["url"] == OWNER]
    recorded = json.loads(owner["valueString"])
    assert recorded["scope"] == "patient/Subscription.cr" and recorded["patient"] == "p1"
