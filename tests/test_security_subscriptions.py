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


async def test_a_patient_app_sees_only_its_own_subscriptions(secured, receiver):
    client = secured.client
    mine = await secured.token("patient/Subscription.cr patient/Observation.rs", patient="p1", name="app-one")
    theirs = await secured.token("patient/Subscription.cr patient/Observation.rs", patient="p2", name="app-two")
    body = r4_subscription("Observation?code=8867-4", receiver.url + "/hook", headers=["Authorization: Bearer x"])
    created = (await client.post("/Subscription", json=body, headers={**FHIR_JSON, **mine})).json()
    assert (await client.get(f"/Subscription/{created['id']}", headers=mine)).status_code == 200
    assert (await client.get(f"/Subscription/{created['id']}", headers=theirs)).status_code == 404
    assert (await client.get(f"/Subscription/{created['id']}/$status", headers=theirs)).status_code == 404
    assert (await client.get("/Subscription", headers=theirs)).status_code == 403
    admin = await secured.token("system/*.rs", name="reader")
    assert (await client.get(f"/Subscription/{created['id']}", headers=admin)).status_code == 200


async def test_websocket_binding_tokens_need_an_access_token_and_masks_reach_notifications(secured, receiver):
    client = secured.client
    owner = await secured.token("patient/Subscription.cr patient/Observation.rs patient/Patient.rs", patient="p1",
                                name="ws-app")
    body = r4_subscription("Observation?code=8867-4", "", channel_type="websocket")
    created = (await client.post("/Subscription", json=body, headers={**FHIR_JSON, **owner})).json()
    url = f"/Subscription/{created['id']}/$get-ws-binding-token"
    assert (await client.get(url)).status_code == 401
    granted = await client.get(url, headers=owner)
    assert granted.status_code == 200 and granted.json()["parameter"][0]["name"] == "token"
    # a masked client's full-resource notifications lose the masked elements
    masked = await secured.token("patient/Subscription.cr patient/Patient.rs", patient="p1", name="masked-app",
                                 mask=("Patient.name",))
    hook = r4_subscription("Patient?gender=female", receiver.url + "/fhir", payload="application/fhir+json")
    assert (await client.post("/Subscription", json=hook, headers={**FHIR_JSON, **masked})).status_code == 201
    admin = {**FHIR_JSON, **await secured.token("system/*.cruds", name="seeder")}
    changed = {"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "Renamed"}]}
    assert (await client.put("/Patient/p1", json=changed, headers=admin)).status_code == 200
    [notification] = await receiver.wait_for(1)
    delivered = json.loads(notification.body)
    assert notification.path == "/fhir/Patient/p1" and "name" not in delivered and delivered["gender"] == "female"
