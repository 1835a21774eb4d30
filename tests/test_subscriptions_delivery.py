"""Durable, at-least-once delivery: retries with backoff, the error horizon, the circuit breaker, leases
between two dispatchers on one database, and a real server killed between commit and delivery."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from ipaddress import ip_network
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.storage import notification_queue
from hearth.storage.owners import new_owner
from subscription_helpers import WAIT, Receiver, r4_subscription, status_of, wait_until
from test_subscriptions_backport import wait_status
from tests.server_process import free_port, kill_group, start, stop
from test_subscriptions import receiver, settings_for, subscribe  # noqa: F401 (fixture)


class Running:
    """An app started on `store`, with an HTTP client."""

    def __init__(self, settings, store) -> None:
        self.app = create_app(settings, store)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.app.startup()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)
        return self.client

    async def __aexit__(self, *exc) -> None:
        await self.client.aclose()
        await self.app.shutdown()


async def test_retries_with_backoff_then_success(backend, tmp_path, receiver):
    receiver.fail = 3
    async with Running(settings_for(tmp_path), make_store(backend, tmp_path)) as client:
        await subscribe(client, r4_subscription("Patient?gender=male", receiver.url))
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await receiver.wait_for(1)
        assert receiver.attempts == 4
        gaps = [b - a for a, b in zip(receiver.attempt_times, receiver.attempt_times[1:])]
        # base 0.05 s doubling, jitter in [0.5, 1]: at least 0.025, 0.05, 0.1 (a busy machine only adds to a gap,
        # so only lower bounds are asserted)
        assert gaps[0] >= 0.024 and gaps[1] >= 0.049 and gaps[2] >= 0.099


async def test_error_after_horizon_and_events_still_fetchable(backend, tmp_path, receiver):
    receiver.always_fail = True
    settings = settings_for(tmp_path, subscription_retry_horizon=2 / 3600)  # two seconds
    async with Running(settings, make_store(backend, tmp_path)) as client:
        sub = await subscribe(client, r4_subscription("Patient?gender=male", receiver.url))
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        current = await wait_status(client, sub["id"], "error")
        assert "503" in current["error"]
        attempts = receiver.attempts
        assert attempts >= 3  # retried within the horizon
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await asyncio.sleep(0.3)
        assert receiver.attempts == attempts  # no more deliveries in error
        status = status_of((await client.get(f"/Subscription/{sub['id']}/$status")).json())
        assert status["status"] == "error" and "503" in status["error"]["text"]
        events = status_of((await client.get(f"/Subscription/{sub['id']}/$events")).json())
        assert [e["event-number"] for e in events["notification-event"]] == ["1", "2"]  # missed, still there
        # the client fixes its endpoint and asks again: active, and new events are delivered
        receiver.always_fail = False
        response = await client.put(f"/Subscription/{sub['id']}", json={**current, "status": "requested"},
                                    headers=FHIR_JSON)
        assert response.json()["status"] == "active" and "error" not in response.json()
        await asyncio.sleep(0.1)
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await receiver.wait_for(1)


async def test_circuit_breaker_stops_hammering_a_failing_endpoint(backend, tmp_path, receiver):
    receiver.always_fail = True
    async with Running(settings_for(tmp_path, subscription_retry_base=0.01), make_store(backend, tmp_path)) as client:
        for _ in range(3):  # three subscriptions, one endpoint
            await subscribe(client, r4_subscription("Patient?gender=male", receiver.url))
        for _ in range(5):
            await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await wait_until(lambda: receiver.attempts >= 5, "5 attempts")
        await asyncio.sleep(1.0)
        # 15 deliveries retried every ~10-80 ms would make dozens of calls; the breaker opens after 5 failures
        assert 5 <= receiver.attempts <= 8


def shared_stores(backend: str, tmp_path: Path, count: int = 2) -> list:
    """`count` stores on one database (as separate processes would have)."""
    if backend == "sqlite":
        return [make_store("sqlite", tmp_path) for _ in range(count)]
    from mongomock_motor import AsyncMongoMockClient

    from hearth.storage.mongo.store import MongoStore
    client, database = AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}"
    return [MongoStore(client, database) for _ in range(count)]


async def test_two_dispatchers_on_one_database_deliver_each_notification_once(backend, tmp_path, receiver):
    first, second = shared_stores(backend, tmp_path)
    async with Running(settings_for(tmp_path), first) as one, Running(settings_for(tmp_path), second) as two:
        await subscribe(one, r4_subscription("Patient?gender=female", receiver.url, payload="application/fhir+json"))
        written = []
        for index in range(30):
            client = one if index % 2 else two
            created = await client.post("/Patient", json={"resourceType": "Patient", "gender": "female"},
                                        headers=FHIR_JSON)
            written.append(created.json()["id"])
        await receiver.wait_for(30)
        await asyncio.sleep(0.5)
        assert sorted(r.path.rsplit("/", 1)[-1] for r in receiver.received) == sorted(written)


async def test_a_restart_takes_over_the_claims_of_its_dead_predecessor_at_once(backend, tmp_path, receiver):
    """Claims held, for an hour, by a process of this machine that is gone are released when Hearth starts;
    a claim of a process that still runs is left alone (it may be delivering right now)."""
    first, direct, restarted = shared_stores(backend, tmp_path, 3)
    receiver.always_fail = True
    async with Running(settings_for(tmp_path), first) as client:
        await subscribe(client, r4_subscription("Patient?gender=male", receiver.url))
        for _ in range(2):
            await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await wait_until(lambda: receiver.attempts >= 2, "both deliveries tried")
    # the two deliveries, claimed as a process killed mid-delivery and a live one (this one) would hold them
    gone = subprocess.run([sys.executable, "-c", "from hearth.storage.owners import new_owner; print(new_owner())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    alive = new_owner()
    queue = notification_queue(direct)
    later = time.time() + 3600  # both due by then, whatever their backoff
    assert len(await queue.claim(gone, later, 3600, 1)) == 1 and len(await queue.claim(alive, later, 3600, 1)) == 1
    await direct.close()
    receiver.always_fail = False
    async with Running(settings_for(tmp_path), restarted):
        queue = notification_queue(restarted)

        async def only_the_live_claim_left() -> bool:
            return await queue.lease_owners(time.time()) == {alive}
        await wait_until(only_the_live_claim_left, "the gone process's claim released (and its delivery done)")
        assert len(await receiver.wait_for(1)) == 1


async def test_only_a_deliverys_owner_completes_it_or_schedules_its_retry(backend, tmp_path):
    """A dispatcher that paused past its claim's lease wakes after another took the delivery over: its completion
    and its retry change nothing (the delivery is not lost to the successor); the successor's completion does."""
    store = make_store(backend, tmp_path)
    try:
        queue = notification_queue(store)
        await queue.open()
        now = time.time() + 60
        await queue.add_delivery("s", "heartbeat", now)
        [paused] = await queue.claim("paused", now, 1, 5)
        [taken] = await queue.claim("successor", now + 2, 30, 5)  # the paused one's lease ran out at now + 1
        await queue.retry(paused, now, "late", True)
        await queue.complete(paused)
        assert await queue.lease_owners(now + 2) == {"successor"}  # still claimed, by the successor
        await queue.complete(taken)
        assert await queue.lease_owners(now + 2) == set() and not await queue.due(now + 3600)
    finally:
        await store.close()


async def test_deliveries_are_timed_by_the_stores_clock(backend, tmp_path, receiver, monkeypatch):
    """With the database's clock an hour ahead of this host's, deliveries are still made at once (created, due and
    claimed by the one clock), and a failed one is due again by the database's clock: a process whose host clock is
    half an hour ahead of this one would not find it due yet."""
    from hearth.storage.mongo.leases import MongoLeases
    from hearth.storage.sqlite.leases import SqliteLeases

    async def an_hour_ahead(self) -> float:
        return time.time() + 3600
    monkeypatch.setattr(SqliteLeases if backend == "sqlite" else MongoLeases, "now", an_hour_ahead)
    store = make_store(backend, tmp_path)
    async with Running(settings_for(tmp_path), store) as client:
        await subscribe(client, r4_subscription("Patient?gender=male", receiver.url))
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        assert len(await receiver.wait_for(1)) == 1
        receiver.always_fail = True
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        await wait_until(lambda: receiver.attempts >= 3, "the failing delivery tried and retried")
        queue = notification_queue(store)
        assert not await queue.due(time.time() + 1800)
        assert await queue.due(time.time() + 3600 + 60)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_notification_survives_a_crash(tmp_path, monkeypatch, workers):
    """A real `hearth serve`: one write while the receiver is down, then killed; one write and killed at
    once (before the dispatcher ran, or holding the claim of a delivery); after a restart both notifications
    arrive (the restarted server takes over its dead predecessor's claims at once: no lease to wait out)."""
    monkeypatch.setenv("HEARTH_SUBSCRIPTION_RETRY_BASE", "0.1")
    monkeypatch.setenv("HEARTH_SUBSCRIPTION_ALLOWED_NETWORKS", "127.0.0.0/8")
    db, port, hook_port = tmp_path / "hearth.db", free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    server = await asyncio.to_thread(start, db, port, workers=workers)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            sub = await subscribe(client, r4_subscription("Patient?gender=female",
                                                          f"http://127.0.0.1:{hook_port}/fhir",
                                                          payload="application/fhir+json"))
            early = (await client.post("/Patient", json={"resourceType": "Patient", "gender": "female"},
                                       headers=FHIR_JSON)).json()["id"]

            async def recorded() -> bool:
                status = status_of((await client.get(f"/Subscription/{sub['id']}/$status")).json())
                return status["events-since-subscription-start"] == "1"
            await wait_until(recorded, "the event recorded (its delivery fails: nobody listens on hook_port)")
    finally:
        await asyncio.to_thread(kill_group, server)
    server = await asyncio.to_thread(start, db, port, workers=workers)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            late = (await client.post("/Patient", json={"resourceType": "Patient", "gender": "female"},
                                      headers=FHIR_JSON)).json()["id"]
        await asyncio.to_thread(kill_group, server)  # right after the commit
    finally:
        await asyncio.to_thread(kill_group, server)
    receiver = await Receiver(port=hook_port).start()
    server = await asyncio.to_thread(start, db, port, workers=workers)
    try:
        received = await receiver.wait_for(2, timeout=2 * WAIT)
        assert sorted(r.path for r in received) == sorted([f"/fhir/Patient/{early}", f"/fhir/Patient/{late}"])
    finally:
        await asyncio.to_thread(stop, server, False)
        await receiver.stop()


def test_claimed_events_are_batched_up_to_max_count():
    from hearth.interactions.context import Context
    from hearth.subscriptions.delivery import Deliverer, DeliveryConfig
    from hearth.subscriptions.egress import EgressPolicy
    from hearth.subscriptions.model import parse_subscription
    from hearth.subscriptions.queue import Delivery
    from hearth.subscriptions.registry import Registry
    from subscription_helpers import BACKPORT, backport_subscription

    ctx = Context(None, BASE)
    loopback = EgressPolicy(allowed_networks=(ip_network("127.0.0.0/8"),))
    registry = Registry()
    body = backport_subscription("resource-change", ["Patient?gender=male"], "http://127.0.0.1:9/x")
    body["channel"]["extension"] = [{"url": f"{BACKPORT}/backport-max-count", "valuePositiveInt": 2}]
    registry.put(parse_subscription(ctx, {**body, "id": "b"}, 1, loopback))
    registry.put(parse_subscription(ctx, {**r4_subscription("Patient?gender=male", "http://127.0.0.1:9/x"),
                                          "id": "r"}, 1, loopback))
    deliverer = Deliverer(ctx, None, registry, DeliveryConfig(), "me", None, loopback, None, None)

    def work(subscription: str, kind: str, number: int | None) -> Delivery:
        return Delivery((subscription, kind, number), subscription, kind, number, 0.0, 0, "me")

    claimed = [work("b", "event", 1), work("r", "event", 1), work("b", "event", 2), work("r", "event", 2),
               work("b", "event", 3), work("b", "heartbeat", None), work("b", "event", 4)]
    groups = [[d.key for d in group] for group in deliverer._groups(claimed)]
    assert groups == [[("b", "event", 1), ("b", "event", 2)], [("r", "event", 1)], [("r", "event", 2)],
                      [("b", "event", 3)], [("b", "heartbeat", None)], [("b", "event", 4)]]
