"""`hearth serve --workers 2` (server/workers.py): two server processes on one port and one SQLite writer behave as
one server: concurrent writes land once each with their right versions, every process reads them, a crash of the
whole group keeps what was committed, and a subscription is notified once per event."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx

from hearth.server.app import create_app
from hearth.server.settings import Settings
from subscription_helpers import Receiver, r4_subscription, wait_until
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


async def test_only_the_group_lease_holder_runs_the_once_only_work(tmp_path):
    """Two services on one store (two processes of a group): the first to take the group lease runs the subscription
    dispatcher, delivery, heartbeats and audit retention, the other none of them, yet both serve the subscription
    operations; when the holder stops, the other takes the lease over at its next turn and starts the work."""
    settings = Settings(storage=str(tmp_path / "hearth.db"), audit_retention_days=30, leader_lease=3.0)
    first, second = create_app(settings), create_app(settings)
    await first.startup()
    await second.startup()
    try:
        assert first.leadership.leading and not second.leadership.leading
        assert first.subscriptions._tasks and first._retention is not None
        assert not second.subscriptions._tasks and second._retention is None
        assert second.subscriptions.queue is not None and second.subscriptions.websockets is not None
        await first.shutdown()  # gives the lease up
        await second.leadership.step()
        assert second.leadership.leading and second.subscriptions._tasks and second._retention is not None
    finally:
        await second.shutdown()


def _leader_pid(db: Path) -> tuple[int, int]:
    """The pid of the group lease's holder (its owner id: machine:pid:start:nonce) and the lease's token."""
    with closing(sqlite3.connect(db)) as conn:
        owner, token = conn.execute("SELECT owner, token FROM leases WHERE name = 'group'").fetchone()
    return int(owner.split(":")[1]), token


async def test_a_killed_leader_is_replaced_and_notifications_go_on(tmp_path):
    """SIGKILL to the process of a `--workers 2` group that holds the group lease: another process takes the lease
    over (the supervisor's replacement or the other one: each sees the holder no longer runs), and a write made
    after the kill is notified, once."""
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    receiver = await Receiver().start()
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    server = await asyncio.to_thread(start, db, port, workers="2", leader_lease="3",
                                     subscription_allowed_networks="127.0.0.0/8")
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            subscription = await client.post("/Subscription", headers=FHIR_JSON,
                                             json=r4_subscription("Observation?status=final", receiver.url))
            assert subscription.status_code == 201
            assert (await client.post("/Observation", headers=FHIR_JSON, json=observation)).status_code == 201
            await receiver.wait_for(1)
            await asyncio.sleep(5)  # (a process that ends in its first 5 s is failing to start: the group would stop)
            leader, token = _leader_pid(db)
            os.kill(leader, signal.SIGKILL)
            await wait_until(lambda: _leader_pid(db)[1] > token, "another process to take the group lease over")
            assert _leader_pid(db)[0] != leader
            assert (await client.post("/Observation", headers=FHIR_JSON, json=observation)).status_code == 201
        await receiver.wait_for(2)
        await asyncio.sleep(2)  # (a copy from a second dispatcher would have come by now)
        assert len(receiver.received) == 2
    finally:
        await asyncio.to_thread(kill_group, server)
        await receiver.stop()


def _server_processes(supervisor: int) -> int:
    """How many `hearth serve` server processes `supervisor` runs (its children but the SQLite writer)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    commands = [Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0") for child in children]
    return sum(1 for command in commands if b"serve" in command)


async def test_by_default_a_server_process_runs_on_each_core(tmp_path):
    server = await asyncio.to_thread(start, tmp_path / "hearth.db", free_port(), workers=None)
    try:
        cores = len(os.sched_getaffinity(0))
        # (on one core the process started is the server itself, with no server processes under it)
        assert _server_processes(server.pid) == (cores if cores > 1 else 0)
    finally:
        await asyncio.to_thread(stop, server, False)


async def test_a_valueset_written_through_one_process_is_honoured_by_every_process(tmp_path):
    """ValueSets live in each process's terminology: after one is written, created, changed or deleted, every
    request, whichever process of the group it reaches (each on a new connection), answers `:in` by its latest
    version within HEARTH_FOLLOW_INTERVAL."""
    db, port = tmp_path / "hearth.db", free_port()
    base, url = f"http://127.0.0.1:{port}", "http://example.org/fhir/ValueSet/vitals"
    server = await asyncio.to_thread(start, db, port, workers="2", follow_interval="0.2")

    def every_process_finds(expected: set[str] | None) -> bool:
        for _ in range(12):  # new connections: the processes take turns accepting
            answer = httpx.get(f"{base}/Observation", params={"code:in": url}, timeout=30)
            got = None if answer.status_code == 400 else {e["resource"]["id"] for e in answer.json()["entry"]}
            if got != expected:
                return False
        return True

    def valueset(code: str) -> dict:
        return {"resourceType": "ValueSet", "id": "vs", "url": url, "status": "active",
                "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": code}]}]}}
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for oid, code in (("hr", "8867-4"), ("rr", "9279-1")):
                assert (await client.put(f"/Observation/{oid}", headers=FHIR_JSON, json={
                    "resourceType": "Observation", "id": oid, "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": code}]}})).status_code == 201
            for body, expected in ((valueset("8867-4"), {"hr"}), (valueset("9279-1"), {"rr"}), (None, None)):
                if body is None:
                    assert (await client.delete("/ValueSet/vs")).status_code == 204
                else:
                    assert (await client.put("/ValueSet/vs", headers=FHIR_JSON, json=body)).status_code in (200, 201)
                await wait_until(lambda: asyncio.to_thread(every_process_finds, expected), f"every process: {expected}")
    finally:
        await asyncio.to_thread(stop, server, False)


def _requests_counted(base: str) -> int:
    """The searches answered 200 that a scrape of /metrics reports (on a new connection: any process)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    return sum(int(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('hearth_http_requests_total{interaction="search_type",method="GET",status="200"}'))


async def test_metrics_count_the_requests_of_every_process_whichever_answers(tmp_path):
    """20 requests spread over the group's two processes: every scrape, whichever process answers it, counts all 20
    (each process shares its figures every second)."""
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    server = await asyncio.to_thread(start, db, port, workers="2")
    try:
        for _ in range(20):  # a connection each: the processes take turns accepting
            assert (await asyncio.to_thread(httpx.get, f"{base}/Patient", timeout=30)).status_code == 200

        def every_scrape_counts_all() -> bool:
            return all(_requests_counted(base) == 20 for _ in range(8))
        await wait_until(lambda: asyncio.to_thread(every_scrape_counts_all), "every scrape to count 20 requests")
    finally:
        await asyncio.to_thread(stop, server, False)
