"""R4 Subscriptions over HTTP on both backends: acceptance, rest-hook delivery, websocket, status."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings
from subscription_helpers import WAIT, Receiver, backport_subscription, r4_subscription, status_of

OBS = {"resourceType": "Observation", "status": "final",
       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
       "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 72.50, "unit": "/min"}}


def settings_for(tmp_path: Path, **overrides) -> Settings:
    """The test app's settings: receivers listen on 127.0.0.1, so loopback is allowed (the setting at work)."""
    values = dict(storage=str(tmp_path / "hearth.db"), base_url=BASE, subscription_retry_base=0.05,
                  subscription_allowed_networks="127.0.0.0/8")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def receiver():
    server = await Receiver().start()
    yield server
    await server.stop()


@pytest.fixture
async def sub_app(backend: str, tmp_path: Path):
    application = create_app(settings_for(tmp_path), make_store(backend, tmp_path))
    await application.startup()
    yield application
    await application.shutdown()


@pytest.fixture
async def sub_client(sub_app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sub_app), base_url=BASE) as client:
        yield client


async def subscribe(client: httpx.AsyncClient, body: dict) -> dict:
    response = await client.post("/Subscription", json=body, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


async def test_r4_rest_hook_empty_payload_matching_writes_only(sub_client, receiver):
    sub = await subscribe(sub_client, r4_subscription("Observation?code=http://loinc.org|8867-4&subject=Patient/p1",
                                                      receiver.url + "/hook", headers=["Authorization: Bearer s3cret",
                                                                                       "X-Extra: 1"]))
    assert sub["status"] == "active"
    await sub_client.post("/Observation", json={**OBS, "subject": {"reference": "Patient/other"}}, headers=FHIR_JSON)
    await sub_client.post("/Observation", json={**OBS, "code": {"coding": [{"system": "http://loinc.org",
                                                                            "code": "1-1"}]}}, headers=FHIR_JSON)
    await sub_client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)
    await sub_client.post("/Observation", json=OBS, headers=FHIR_JSON)
    [notification] = await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1  # the three non-matching writes caused nothing
    assert notification.method == "POST" and notification.path == "/hook" and notification.body == b""
    assert notification.headers["Authorization"] == "Bearer s3cret" and notification.headers["X-Extra"] == "1"


async def test_r4_rest_hook_full_payload_puts_the_resource(sub_client, receiver):
    await subscribe(sub_client, r4_subscription("Observation?code=8867-4", receiver.url + "/fhir",
                                                payload="application/fhir+json"))
    body = json.dumps(OBS).replace("72.5", "72.50")  # json would write 72.5
    created = (await sub_client.post("/Observation", content=body, headers=FHIR_JSON)).json()
    await sub_client.delete(f"/Observation/{created['id']}")
    first, second = await receiver.wait_for(2)
    assert (first.method, first.path) == ("PUT", f"/fhir/Observation/{created['id']}")
    assert first.headers["Content-Type"] == "application/fhir+json"
    assert b'"value":72.50' in first.body  # the stored bytes, decimals kept
    assert first.json()["meta"]["versionId"] == "1"
    assert (second.method, second.path) == ("DELETE", f"/fhir/Observation/{created['id']}")


@pytest.mark.parametrize("body, expression", [
    (r4_subscription("Observation?nonsense=1", "http://127.0.0.1:9/x"), "Subscription.criteria"),
    (r4_subscription("NotAType?code=1", "http://127.0.0.1:9/x"), "Subscription.criteria"),
    (r4_subscription("Observation?code=1&_sort=date", "http://127.0.0.1:9/x"), "Subscription.criteria"),
    (r4_subscription("Observation?code=1", "ftp://127.0.0.1/x"), "Subscription.channel.endpoint"),
    (r4_subscription("Observation?code=1", "http://127.0.0.1:9/x", payload="text/xml"),
     "Subscription.channel.payload"),
    (r4_subscription("Observation?code=1", "http://127.0.0.1:9/x", headers=["no colon"]),
     "Subscription.channel.header"),
    ({**r4_subscription("Observation?code=1", "http://127.0.0.1:9/x"), "channel": {"type": "email"}},
     "Subscription.channel.type"),
])
async def test_unusable_subscriptions_are_refused_and_not_stored(sub_client, body, expression):
    response = await sub_client.post("/Subscription", json=body, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]
    assert (await sub_client.get("/Subscription")).json().get("total", 0) == 0 or \
        not (await sub_client.get("/Subscription")).json().get("entry")


async def test_allowed_hosts(backend, tmp_path):
    settings = settings_for(tmp_path, subscription_allowed_hosts="hooks.example.org, 127.0.0.1")
    application = create_app(settings, make_store(backend, tmp_path))
    await application.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=BASE) as client:
            refused = await client.post("/Subscription", json=r4_subscription(
                "Patient?gender=male", "https://evil.example.com/x"), headers=FHIR_JSON)
            assert refused.status_code == 422 and "allowed hosts" in refused.text
            accepted = await client.post("/Subscription", json=r4_subscription(
                "Patient?gender=male", "https://hooks.example.org/x"), headers=FHIR_JSON)
            assert accepted.status_code == 201
    finally:
        await application.shutdown()


async def test_status_off_stops_notifications_and_update_changes_criteria(sub_client, receiver):
    sub = await subscribe(sub_client, r4_subscription("Patient?gender=female", receiver.url))
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=FHIR_JSON)
    await receiver.wait_for(1)
    changed = {**sub, "criteria": "Patient?gender=male"}
    assert (await sub_client.put(f"/Subscription/{sub['id']}", json=changed, headers=FHIR_JSON)).status_code == 200
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=FHIR_JSON)
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
    await receiver.wait_for(2)
    current = (await sub_client.get(f"/Subscription/{sub['id']}")).json()
    await sub_client.put(f"/Subscription/{sub['id']}", json={**current, "status": "off"}, headers=FHIR_JSON)
    assert (await sub_client.get(f"/Subscription/{sub['id']}")).json()["status"] == "off"
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
    await asyncio.sleep(0.4)
    assert len(receiver.received) == 2


async def test_websocket_bind_and_ping(backend, tmp_path):
    """A real uvicorn server in-process: websockets need a socket."""
    import socket

    import uvicorn
    import websockets

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    application = create_app(Settings(storage=str(tmp_path / "hearth.db"), base_url=base, port=port),
                             make_store(backend, tmp_path))
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning",
                                          lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=base) as client:
            sub = (await client.post("/Subscription", json=r4_subscription("Patient?gender=other", "",
                                                                           channel_type="websocket"),
                                     headers=FHIR_JSON)).json()
            assert sub["status"] == "active"
            async with websockets.connect(f"ws://127.0.0.1:{port}/$subscription-ws") as ws:
                await ws.send("bind nope")
                assert (await ws.recv()).startswith("error")
                await ws.send(f"bind {sub['id']}")
                assert await ws.recv() == f"bound {sub['id']}"
                await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
                await client.post("/Patient", json={"resourceType": "Patient", "gender": "other"}, headers=FHIR_JSON)
                assert await asyncio.wait_for(ws.recv(), WAIT) == f"ping {sub['id']}"
                events = (await client.get(f"/Subscription/{sub['id']}/$events")).json()
                assert len(events["entry"]) == 1
            # backport over a websocket: the handshake on bind, then the notification Bundles themselves
            topic = (await client.post("/Subscription", json=backport_subscription(
                "resource-change", ["Patient?gender=unknown"], "", content="full-resource", channel_type="websocket"),
                headers=FHIR_JSON)).json()
            assert topic["status"] == "active"
            token = (await client.get(f"/Subscription/{topic['id']}/$get-ws-binding-token")).json()
            found = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in token["parameter"]}
            assert found["websocket-url"] == f"ws://127.0.0.1:{port}/$subscription-ws"
            async with websockets.connect(found["websocket-url"]) as ws:
                await ws.send(f"bind-with-token {found['token']}x")
                assert (await ws.recv()).startswith("error")
                await ws.send(f"bind-with-token {found['token']}")
                assert status_of(json.loads(await ws.recv()))["type"] == "handshake"
                await client.post("/Patient", json={"resourceType": "Patient", "gender": "unknown"}, headers=FHIR_JSON)
                bundle = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
                assert status_of(bundle)["notification-event"][0]["event-number"] == "1"
                assert bundle["entry"][1]["resource"]["gender"] == "unknown"
    finally:
        server.should_exit = True
        await serving


async def test_no_events_after_end(sub_client, receiver):
    ended = {**r4_subscription("Patient?gender=unknown", receiver.url + "/ended"), "end": "2020-01-01T00:00:00Z"}
    await subscribe(sub_client, ended)
    await subscribe(sub_client, r4_subscription("Patient?gender=unknown", receiver.url + "/open"))
    await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "unknown"}, headers=FHIR_JSON)
    [notification] = await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1 and notification.path == "/open"


async def test_chained_criteria(sub_client, receiver):
    patient = (await sub_client.post("/Patient", json={"resourceType": "Patient", "gender": "female",
                                                       "name": [{"family": "Chalmers"}]}, headers=FHIR_JSON)).json()
    await subscribe(sub_client, r4_subscription("Observation?subject:Patient.name=chalmers", receiver.url))
    await sub_client.post("/Observation", json={**OBS, "subject": {"reference": "Patient/nobody"}}, headers=FHIR_JSON)
    await sub_client.post("/Observation", json={**OBS, "subject": {"reference": f"Patient/{patient['id']}"}},
                          headers=FHIR_JSON)
    await receiver.wait_for(1)
    await asyncio.sleep(0.3)
    assert len(receiver.received) == 1


async def test_unusable_subscription_refused_on_every_write_path(client):
    """Bundles, conditional updates and PATCH meet the same checks as a direct create."""
    bad = {"resourceType": "Subscription", "status": "requested", "reason": "r", "criteria": "Observation?colour=x",
           "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json"}}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "resource": bad,
         "request": {"method": "POST", "url": "Subscription"}}]}
    refused = await client.post("/", json=transaction, headers={"Content-Type": "application/fhir+json"})
    assert refused.status_code in (400, 422), refused.text
    conditional = await client.put("/Subscription?_id=nope", json=bad, headers={"Content-Type": "application/fhir+json"})
    assert conditional.status_code == 422, conditional.text
    good = {**bad, "criteria": "Observation?code=1234"}
    created = await client.post("/Subscription", json=good, headers={"Content-Type": "application/fhir+json"})
    assert created.status_code == 201, created.text
    patch = [{"op": "replace", "path": "/criteria", "value": "Observation?colour=x"}]
    patched = await client.patch(f"/Subscription/{created.json()['id']}", content=json.dumps(patch),
                                 headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 422, patched.text
    assert (await client.get("/Subscription")).json()["total"] == 1


async def test_writes_by_another_process_on_the_same_database_are_notified(tmp_path, receiver):
    """The dispatcher wakes on this server's own commits; what another writer (e.g. `hearth import`) commits to the
    same database it finds by looking again at least every `idle_poll` second."""
    from hearth.interactions import crud
    from hearth.interactions.request import SYSTEM
    from hearth.interactions.context import Context
    from hearth.storage.sqlite.store import SqliteStore

    application = create_app(settings_for(tmp_path), make_store("sqlite", tmp_path))
    await application.startup()
    other = SqliteStore(str(tmp_path / "hearth.db"))  # make_store's file, through a store of its own
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=BASE) as client:
            await subscribe(client, r4_subscription("Patient?gender=female", receiver.url))
            await crud.create(Context(other, BASE), SYSTEM, "Patient", {"resourceType": "Patient", "gender": "female"})
            await receiver.wait_for(1)
    finally:
        await other.close()
        await application.shutdown()
