"""Topic-based subscriptions (R5 Backport IG on R4) over HTTP on both backends."""

from __future__ import annotations

import asyncio

import pytest

from conftest import FHIR_JSON
from subscription_helpers import TOPICS, backport_subscription, status_of, wait_until
from test_subscriptions import receiver, sub_app, sub_client, subscribe  # noqa: F401 (fixtures)


async def wait_status(client, subscription_id: str, status: str) -> dict:
    """The subscription once its status is `status`."""
    resource: dict = {}

    async def reached() -> bool:
        nonlocal resource
        resource = (await client.get(f"/Subscription/{subscription_id}")).json()
        return resource["status"] == status
    await wait_until(reached, f"Subscription/{subscription_id} to become {status}")
    return resource


async def test_handshake_then_events_with_increasing_numbers(sub_client, receiver):
    sub = await subscribe(sub_client, backport_subscription(
        "resource-change", ["Patient?gender=female"], receiver.url + "/notify", content="full-resource"))
    assert sub["status"] == "requested"
    [handshake] = await receiver.wait_for(1)
    status = status_of(handshake.json())
    assert handshake.json()["type"] == "history"
    assert status["type"] == "handshake" and status["topic"] == f"{TOPICS}/resource-change"
    assert status["subscription"]["reference"].endswith(f"/Subscription/{sub['id']}")
    await wait_status(sub_client, sub["id"], "active")

    female = (await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "female"},
                                    headers=FHIR_JSON)).json()
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
    await sub_client.put(f"/Patient/{female['id']}", json={**female, "active": True}, headers=FHIR_JSON)
    _, first, second = await receiver.wait_for(3)
    numbers = []
    for notification, version in ((first, "1"), (second, "2")):
        bundle = notification.json()
        status = status_of(bundle)
        assert status["type"] == "event-notification" and status["status"] == "active"
        [event] = status["notification-event"]
        numbers.append(int(event["event-number"]))
        assert event["focus"]["reference"].endswith(f"/Patient/{female['id']}/_history/{version}")
        assert bundle["entry"][1]["resource"]["meta"]["versionId"] == version
        assert int(status["events-since-subscription-start"]) >= numbers[-1]
    assert numbers == [1, 2]
    assert first.json()["entry"][1]["request"]["method"] == "POST"
    assert second.json()["entry"][1]["request"] == {"method": "PUT", "url": f"Patient/{female['id']}"}


async def test_id_only_and_empty_content(sub_client, receiver):
    await subscribe(sub_client, backport_subscription("new-observation", ["Observation?subject=Patient/p9"],
                                                      receiver.url + "/ids", content="id-only"))
    await subscribe(sub_client, backport_subscription("new-observation", ["Observation?subject=Patient/p9"],
                                                      receiver.url + "/empty", content="empty"))
    await receiver.wait_for(2)  # handshakes
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "subject": {"reference": "Patient/p9"}}
    created = (await sub_client.post("/Observation", json=observation, headers=FHIR_JSON)).json()
    await sub_client.put(f"/Observation/{created['id']}", json=created, headers=FHIR_JSON)  # an update: not "new"
    await sub_client.post("/Observation", json={**observation, "subject": {"reference": "Patient/p1"}},
                          headers=FHIR_JSON)
    await receiver.wait_for(4)
    await asyncio.sleep(0.3)
    by_path = {r.path: r.json() for r in receiver.received[2:]}
    assert len(receiver.received) == 4
    ids_entry = by_path["/ids"]["entry"][1]
    assert ids_entry["fullUrl"].endswith(f"/Observation/{created['id']}") and "resource" not in ids_entry
    assert len(by_path["/empty"]["entry"]) == 1
    assert "focus" not in status_of(by_path["/empty"])["notification-event"][0]


async def test_encounter_start_and_end_topics(sub_client, receiver):
    await subscribe(sub_client, backport_subscription("encounter-start", ["Encounter?patient=Patient/e1"],
                                                      receiver.url + "/start"))
    await subscribe(sub_client, backport_subscription("encounter-end", [], receiver.url + "/end"))
    await receiver.wait_for(2)
    encounter = {"resourceType": "Encounter", "status": "planned", "subject": {"reference": "Patient/e1"},
                 "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    created = (await sub_client.post("/Encounter", json=encounter, headers=FHIR_JSON)).json()
    for status in ("in-progress", "in-progress", "finished"):
        current = (await sub_client.get(f"/Encounter/{created['id']}")).json()
        await sub_client.put(f"/Encounter/{created['id']}", json={**current, "status": status}, headers=FHIR_JSON)
    await receiver.wait_for(4)
    await asyncio.sleep(0.3)
    paths = sorted(r.path for r in receiver.received[2:])
    assert paths == ["/end", "/start"]  # started once (v2, not v3), ended once


@pytest.mark.parametrize("body, expression", [
    (backport_subscription("no-such-topic", [], "http://127.0.0.1:9/x"), "Subscription.criteria"),
    (backport_subscription("resource-change", [], "http://127.0.0.1:9/x"), "Subscription.criteria.extension"),
    (backport_subscription("encounter-start", ["Patient?gender=male"], "http://127.0.0.1:9/x"),
     "Subscription.criteria.extension"),
    (backport_subscription("resource-change", ["Patient?bogus=1"], "http://127.0.0.1:9/x"),
     "Subscription.criteria.extension"),
    (backport_subscription("resource-change", ["Patient?gender=male"], "http://127.0.0.1:9/x", content="most"),
     "Subscription.channel.payload"),
])
async def test_bad_backport_subscriptions_are_refused(sub_client, body, expression):
    response = await sub_client.post("/Subscription", json=body, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == [expression]


async def test_heartbeat(sub_client, receiver):
    await subscribe(sub_client, backport_subscription("resource-change", ["Basic?code=x"], receiver.url,
                                                      heartbeat=1))
    received = await receiver.wait_for(2)
    assert [status_of(r.json())["type"] for r in received[:2]] == ["handshake", "heartbeat"]


async def test_status_and_events_operations(sub_client, receiver):
    sub = await subscribe(sub_client, backport_subscription("resource-change", ["Patient?gender=other"],
                                                            receiver.url, content="id-only"))
    await wait_status(sub_client, sub["id"], "active")
    for _ in range(3):
        await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "other"}, headers=FHIR_JSON)
    await receiver.wait_for(4)

    status = (await sub_client.get(f"/Subscription/{sub['id']}/$status")).json()
    assert status["type"] == "searchset" and status["total"] == 1
    parameters = status_of(status)
    assert parameters["type"] == "query-status" and parameters["status"] == "active"
    assert parameters["events-since-subscription-start"] == "3"
    by_query = (await sub_client.get(f"/Subscription/$status?id={sub['id']}")).json()
    assert status_of(by_query)["events-since-subscription-start"] == "3"

    events = (await sub_client.get(f"/Subscription/{sub['id']}/$events",
                                   params={"eventsSinceNumber": "2", "content": "full-resource"})).json()
    parameters = status_of(events)
    assert parameters["type"] == "query-event"
    assert [e["event-number"] for e in parameters["notification-event"]] == ["2", "3"]
    assert [e["resource"]["gender"] for e in events["entry"][1:]] == ["other", "other"]
    until = status_of((await sub_client.get(f"/Subscription/{sub['id']}/$events",
                                            params={"eventsUntilNumber": "1"})).json())
    assert [e["event-number"] for e in until["notification-event"]] == ["1"]
    assert (await sub_client.get("/Subscription/missing/$status")).status_code == 404
    assert (await sub_client.get(f"/Subscription/{sub['id']}/$events?eventsSinceNumber=x")).status_code == 400


async def test_capability_statement_advertises_subscriptions(sub_client):
    statement = (await sub_client.get("/metadata")).json()
    [subscription] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    topics = {e["valueCanonical"] for e in subscription["extension"]}
    assert {f"{TOPICS}/resource-change", f"{TOPICS}/encounter-start", f"{TOPICS}/encounter-end",
            f"{TOPICS}/new-observation"} <= topics
    assert {o["name"] for o in subscription["operation"]} == {"status", "events", "get-ws-binding-token"}
    assert "rest-hook" in subscription["documentation"] and "websocket" in subscription["documentation"]
    assert statement["rest"][0]["extension"][0]["valueUrl"].endswith("/$subscription-ws")
    assert statement["instantiates"][0].endswith("backport-subscription-server-r4")
