"""`hearth serve --workers 2` (server/workers.py): two server processes on one port and one SQLite writer behave as
one server: concurrent writes land once each with their right versions, every process reads them, a crash of the
whole group keeps what was committed, and a subscription is notified once per event."""

from __future__ import annotations

import asyncio

import httpx

from hearth.server.app import create_app
from hearth.server.settings import Settings
from subscription_helpers import Receiver, r4_subscription
from tests.server_process import free_port, kill_group, start, stop

FHIR_JSON = {"Content-Type": "application/fhir+json"}
IDENTIFIER = "urn:test:workers|same"


async def _writes(client: httpx.AsyncClient) -> tuple[list[str], str]:
    """50 creates and 50 conditional creates of one identifier at once: the ids created, and the contested one's."""
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:test:workers", "value": "same"}]}
    responses = await asyncio.gather(
        *[client.post("/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=FHIR_JSON)
          for _ in range(50)],
        *[client.post("/Patient", json=patient, headers={**FHIR_JSON, "If-None-Exist": f"identifier={IDENTIFIER}"})
          for _ in range(50)])
    plain, conditional = responses[:50], responses[50:]
    assert all(response.status_code == 201 for response in plain)
    assert sorted(response.status_code for response in conditional) == [200] * 49 + [201]
    contested = {response.headers["Location"].split("/")[4] for response in conditional}
    assert len(contested) == 1  # one resource, the 49 others were told of it
    ids = [response.json()["id"] for response in plain]
    assert len(set(ids)) == 50 and all(response.json()["meta"]["versionId"] == "1" for response in plain)
    return ids, contested.pop()


async def _updates(client: httpx.AsyncClient, resource_id: str) -> None:
    """20 concurrent updates of one resource: each success makes the next version, none twice."""
    current = (await client.get(f"/Patient/{resource_id}")).json()
    responses = await asyncio.gather(*[client.put(f"/Patient/{resource_id}", json={**current, "gender": "other"},
                                                  headers=FHIR_JSON) for _ in range(20)])
    versions = [int(response.json()["meta"]["versionId"]) for response in responses if response.status_code == 200]
    assert versions and len(set(versions)) == len(versions)
    assert int((await client.get(f"/Patient/{resource_id}")).json()["meta"]["versionId"]) == 1 + len(versions)


def _reads_everywhere(base: str, ids: list[str], contested: str) -> None:
    """Reads, each on a connection of its own (the processes take turns accepting): every write is seen."""
    for resource_id in ids[::5]:
        assert httpx.get(f"{base}/Patient/{resource_id}", timeout=30).status_code == 200
    found = httpx.get(f"{base}/Patient", params={"identifier": IDENTIFIER, "_summary": "count"}, timeout=30).json()
    assert found["total"] == 1 and httpx.get(f"{base}/Patient/{contested}", timeout=30).status_code == 200


async def test_two_workers_serve_as_one(tmp_path):
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = await Receiver().start()
    settings = {"workers": "2", "subscription_allowed_networks": "127.0.0.0/8"}
    server = await asyncio.to_thread(start, db, port, **settings)
    try:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
            subscription = await client.post("/Subscription", headers=FHIR_JSON,
                                             json=r4_subscription("Observation?status=final", receiver.url))
            assert subscription.status_code == 201
            ids, contested = await _writes(client)
            await _updates(client, ids[0])
            observations = await asyncio.gather(*[client.post(
                "/Observation", headers=FHIR_JSON, json={"resourceType": "Observation", "status": "final",
                                                         "code": {"text": "x"}}) for _ in range(6)])
            assert all(response.status_code == 201 for response in observations)
        await asyncio.to_thread(_reads_everywhere, base, ids, contested)
        await receiver.wait_for(6)
        await asyncio.sleep(2)  # (a second dispatcher would have sent its copies by now: it polls every second)
        assert len(receiver.received) == 6
    finally:
        await asyncio.to_thread(kill_group, server)  # a crash of every process of the group
        await receiver.stop()
    server = await asyncio.to_thread(start, db, port, **settings)
    try:
        await asyncio.to_thread(_reads_everywhere, base, ids, contested)
        history = httpx.get(f"{base}/Patient/{ids[0]}/_history", timeout=30).json()
        assert history["total"] == int(httpx.get(f"{base}/Patient/{ids[0]}", timeout=30).json()["meta"]["versionId"])
    finally:
        await asyncio.to_thread(stop, server, False)


async def test_only_the_process_told_so_runs_the_groups_singletons(tmp_path):
    """`hearth serve --workers N` tells its first process only (HEARTH_SINGLETONS): the others start no subscription
    dispatcher, delivery or heartbeats, and no audit retention, yet serve the subscription operations."""
    for singletons in (True, False):
        settings = Settings(storage=str(tmp_path / "hearth.db"), singletons=singletons, audit_retention_days=30)
        app = create_app(settings)
        await app.startup()
        try:
            assert bool(app.subscriptions._tasks) is singletons and (app._retention is not None) is singletons
            assert app.subscriptions.queue is not None and app.subscriptions.websockets is not None
        finally:
            await app.shutdown()
