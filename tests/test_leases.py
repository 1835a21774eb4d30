"""Leases judged by the store's clock, with fencing tokens (storage/*/leases.py), and the group's once-only work led
by whichever process holds the group lease (server/leadership.py); both backends."""

from __future__ import annotations

import asyncio

import pytest

from conftest import FHIR_JSON, make_store, reopenable
from export_helpers import Running, export_settings
from subscription_helpers import Receiver, r4_subscription, wait_until
from hearth.server.leadership import LEASE_NAME
from hearth.storage import connector_records, leases
from hearth.storage.base import LeaseLost


@pytest.fixture
async def store(backend, tmp_path):
    opened = make_store(backend, tmp_path)
    yield opened
    await opened.close()


async def test_one_owner_holds_a_lease_until_it_expires_and_the_token_grows_with_each_holder(store):
    held = leases(store)
    await held.open()
    first = await held.acquire("job", "a", 0.4)
    assert first is not None and first.token == 1 and first.owner == "a"
    assert await held.acquire("job", "b", 0.4) is None
    renewed = await held.acquire("job", "a", 0.4)
    assert renewed is not None and renewed.token == 1 and renewed.until >= first.until
    await asyncio.sleep(0.5)
    taken = await held.acquire("job", "b", 10)
    assert taken is not None and taken.token == 2 and taken.owner == "b"
    assert await held.acquire("job", "a", 10) is None  # the former holder cannot renew
    assert not await held.release(renewed)  # nor give up what it no longer holds
    assert await held.holder("job") == taken
    assert await held.release(taken)
    again = await held.acquire("job", "a", 10)  # given up: free at once
    assert again is not None and again.token == 3


async def test_a_write_fenced_by_a_lost_lease_is_refused_and_changes_nothing(store):
    held, records = leases(store), connector_records(store)
    await held.open()
    await records.open()
    old = await held.acquire("connector:x", "a", 0.3)
    await records.put("checkpoint", "x", {"at": 1}, fence=old)
    await asyncio.sleep(0.4)
    with pytest.raises(LeaseLost):  # expired, not yet taken over
        await records.put("checkpoint", "x", {"at": 2}, fence=old)
    new = await held.acquire("connector:x", "b", 10)
    await records.put("checkpoint", "x", {"at": 3}, fence=new)
    with pytest.raises(LeaseLost):  # the paused former holder wakes up and writes late
        await records.put("checkpoint", "x", {"at": 2}, fence=old)
    assert await records.get("checkpoint", "x") == {"at": 3}


async def test_a_leader_that_stops_renewing_is_replaced_and_its_late_write_refused(backend, tmp_path):
    """Two processes on one store: the first leads (subscription delivery runs there); it pauses (stops renewing,
    as a process stopped by the OS or killed would); the second takes the group lease over once it expires and
    delivers from then on; a write the paused leader makes under its old lease is refused."""
    store = reopenable(backend, tmp_path)
    receiver = await Receiver().start()
    settings = export_settings(tmp_path, leader_lease=0.6)
    try:
        async with Running(settings, store()) as a, Running(settings, store()) as b:
            assert a.app.leadership.leading and not b.app.leadership.leading
            created = await a.client.post("/Subscription", headers=FHIR_JSON, json=r4_subscription(
                "Observation?status=final", receiver.url + "/hook"))
            assert created.status_code == 201, created.text
            observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
            assert (await b.client.post("/Observation", json=observation, headers=FHIR_JSON)).status_code == 201
            await receiver.wait_for(1)  # matched and delivered by the leader, whoever wrote it
            paused = a.app.leadership.lease
            a.app._leading.cancel()  # a stops renewing without giving the lease up
            a.app.leadership.step = _never  # (its shutdown must not give it up either)
            await wait_until(lambda: b.app.leadership.leading, "the second process to take the group lease over")
            assert b.app.leadership.lease.token > paused.token
            await a.app.subscriptions.step_down()  # what a's loop would have done on seeing the lease lost

            assert (await a.client.post("/Observation", json=observation, headers=FHIR_JSON)).status_code == 201
            received = await receiver.wait_for(2)
            assert len(received) == 2  # delivered once, by the new leader

            records = connector_records(a.app.ctx.store)
            await records.open()
            with pytest.raises(LeaseLost):
                await records.put("checkpoint", "late", {"from": "a"}, fence=paused)
            assert await records.get("checkpoint", "late") is None
            holder = await leases(b.app.ctx.store).holder(LEASE_NAME)
            assert holder.owner == b.app.leadership.owner
    finally:
        await receiver.stop()


async def _never() -> None:
    return None
