"""The HL7 v2 inbox (storage/base.py Hl7Inbox), one suite for both backends: insert-if-absent with the stored ACK
replayed to duplicates, batches, claims in arrival order with leases, settle and reopen, counts, purge, rejected rows
replaced by other content, connectors kept apart, and (SQLite) rows durable across a restart.

SQLite on a temp file; MongoDB on mongomock-motor, or on a real server when HEARTH_TEST_MONGODB_URL is set.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time

import pytest

from conftest import make_store
from hearth.storage import hl7_inbox
from hearth.storage.base import NewInboxRow

A, B = "adt-in", "lab-in"


def message(control_id: str, body: str = "PID|1||123^^^EDGEFAC^MR", state: str = "pending",
            ack: bytes | None = None) -> NewInboxRow:
    raw = f"MSH|^~\\&|APP|FAC|HEARTH|HOME|20260102030405||ADT^A01|{control_id}|P|2.5\r{body}".encode()
    key = hashlib.sha256(f"APP\x1fFAC\x1f{control_id}".encode()).hexdigest()
    return NewInboxRow(key, hashlib.sha256(raw).hexdigest(), raw, "utf-8",
                       {"control_id": control_id, "type": "ADT", "event": "A01", "patients": ["123"]},
                       state=state, ack=ack)


@pytest.fixture
async def opened(backend, tmp_path):
    store = make_store(backend, tmp_path)
    if hasattr(store, "open"):
        await store.open()
    inbox = hl7_inbox(store)
    await inbox.open()
    yield store, inbox
    await store.close()


@pytest.fixture
async def inbox(opened):
    return opened[1]


async def test_a_message_is_stored_once_and_a_duplicate_gets_the_stored_row(inbox):
    first = message("MSG-1")
    assert await inbox.receive(A, [first]) == [None]
    row = await inbox.get(A, first.key)
    assert (row.connector, row.key, row.digest, row.state, row.raw, row.charset) == (
        A, first.key, first.digest, "pending", first.raw, "utf-8")
    assert row.header == first.header and row.settled is None and row.ack is None and row.attempts == 0
    ack = b"MSH|^~\\&|HEARTH|HOME|APP|FAC|20260102030406||ACK^A01|A1|P|2.5\rMSA|AA|MSG-1"
    assert await inbox.settle(A, row.seq, None, ack=ack)  # the ACK saved, the row still pending
    [duplicate] = await inbox.receive(A, [message("MSG-1")])
    assert duplicate.seq == row.seq and duplicate.ack == ack and duplicate.state == "pending"
    assert await inbox.counts(A) == (1, row.received)
    assert await inbox.get(A, message("nope").key) is None


async def test_twenty_concurrent_receives_of_one_message_store_one_row(inbox):
    answers = await asyncio.gather(*(inbox.receive(A, [message("MSG-RACE")]) for _ in range(20)))
    assert sorted(answer[0] is None for answer in answers) == [False] * 19 + [True]
    assert len({answer[0].seq for answer in answers if answer[0] is not None}) == 1
    assert (await inbox.counts(A))[0] == 1


async def test_a_batch_is_stored_in_order_in_one_call(inbox):
    batch = [message(f"B-{n}") for n in range(3)]
    assert await inbox.receive(A, [*batch, message("B-1")]) == [None, None, None, await inbox.get(A, batch[1].key)]
    rows = [await inbox.get(A, row.key) for row in batch]
    assert [row.header["control_id"] for row in rows] == ["B-0", "B-1", "B-2"]
    assert rows[0].seq < rows[1].seq < rows[2].seq


async def test_sqlite_a_batch_that_fails_stores_nothing(tmp_path):
    store = make_store("sqlite", tmp_path)
    inbox = hl7_inbox(store)
    try:
        await inbox.open()
        broken = NewInboxRow(message("X-2").key, "d", b"MSH|", None, {})  # type: ignore[arg-type]  # NOT NULL
        with pytest.raises(sqlite3.IntegrityError):  # the second row, after the first was inserted
            await inbox.receive(A, [message("X-1"), broken])
        assert await inbox.get(A, message("X-1").key) is None
        assert await inbox.counts(A) == (0, None)
    finally:
        await store.close()


async def test_claims_follow_arrival_order_and_leases(inbox, monkeypatch):
    clock = _Clock()  # leases are judged by the caller's clock: moved by hand, never slept on (no timing race)
    for module in ("hearth.storage.sqlite.hl7_inbox", "hearth.storage.mongo.hl7_inbox"):
        monkeypatch.setattr(f"{module}.time", clock)
    await inbox.receive(A, [message(f"C-{n}") for n in range(3)])
    first = await inbox.claim(A, "worker-1", 2, 30)
    assert [row.header["control_id"] for row in first] == ["C-0", "C-1"]
    assert all(row.owner == "worker-1" and row.attempts == 1 and row.lease_until == clock.now + 30 for row in first)
    [third] = await inbox.claim(A, "worker-2", 5, 60)
    assert third.header["control_id"] == "C-2" and third.owner == "worker-2"
    assert await inbox.claim(A, "worker-2", 5, 60) == []  # all leased: nothing twice
    clock.now += 31
    again = await inbox.claim(A, "worker-2", 5, 60)  # the expired leases, in order; C-2 is still leased
    assert [(row.header["control_id"], row.attempts, row.owner) for row in again] == [
        ("C-0", 2, "worker-2"), ("C-1", 2, "worker-2")]
    assert await inbox.claim(A, "worker-2", 0, 60) == []
    # a converter that takes over the connector (its former holder crashed) releases what that one had claimed
    assert await inbox.release(A) == 3
    assert [row.header["control_id"] for row in await inbox.claim(A, "worker-3", 5, 60)] == ["C-0", "C-1", "C-2"]


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


async def test_settle_and_reopen(inbox):
    await inbox.receive(A, [message("S-1"), message("S-2"), message("S-3")])
    one, two, three = await inbox.claim(A, "w", 3, 60)
    assert await inbox.settle(A, one.seq, "done", result={"written": ["Patient/p1@1"], "notes": ["no PV1-19"]})
    assert await inbox.settle(A, two.seq, "failed", error="conversion: no PID-3")
    done, failed = await inbox.get(A, one.key), await inbox.get(A, two.key)
    assert (done.state, done.owner, done.lease_until, done.result) == (
        "done", None, 0, {"written": ["Patient/p1@1"], "notes": ["no PV1-19"]})
    assert done.settled is not None and done.settled >= done.received
    assert (failed.state, failed.error) == ("failed", "conversion: no PID-3")
    assert await inbox.counts(A) == (1, three.received)
    assert not await inbox.reopen(A, three.seq)  # pending (and leased): not reopened
    assert await inbox.reopen(A, two.seq)  # the dead letter retried
    reopened = await inbox.get(A, two.key)
    assert (reopened.state, reopened.settled, reopened.owner, reopened.attempts) == ("pending", None, None, 1)
    [retried] = await inbox.claim(A, "w", 5, 60)
    assert retried.seq == two.seq and retried.attempts == 2
    app_ack = b"MSH|^~\\&|HEARTH|HOME|APP|FAC|20260102030406||ACK|A2|P|2.5\rMSA|AA|S-2"
    assert await inbox.settle(A, retried.seq, "done", app_ack=app_ack, result={"written": []})
    settled = await inbox.get(A, two.key)
    assert (settled.state, settled.app_ack, settled.error, settled.result) == (
        "done", app_ack, "conversion: no PID-3", {"written": []})
    assert not await inbox.settle(A, 999_999, "done") and not await inbox.settle(B, one.seq, "done")
    assert not await inbox.reopen(B, two.seq)
    with pytest.raises(ValueError):
        await inbox.settle(A, one.seq, "pending")
    with pytest.raises(ValueError):
        await inbox.receive(A, [message("S-4", state="queued")])


async def test_counts_and_purge(inbox):
    assert await inbox.counts(A) == (0, None)
    await inbox.receive(A, [message("P-1"), message("P-2"), message("P-3"), message("P-4")])
    rows = [await inbox.get(A, message(f"P-{n}").key) for n in range(1, 5)]
    assert await inbox.counts(A) == (4, rows[0].received)
    await inbox.settle(A, rows[0].seq, "done")
    await inbox.settle(A, rows[1].seq, "failed", error="x")
    await asyncio.sleep(0.02)
    cut = time.time()
    await asyncio.sleep(0.02)
    await inbox.settle(A, rows[2].seq, "done")  # settled after the cut: kept
    assert await inbox.counts(A) == (1, rows[3].received)
    assert await inbox.purge(B, cut) == 0
    assert await inbox.purge(A, cut) == 2
    assert [await inbox.get(A, row.key) is not None for row in rows] == [False, False, True, True]
    assert await inbox.purge(A, time.time() + 1) == 1  # the pending one stays
    assert await inbox.get(A, rows[3].key) is not None and await inbox.counts(A) == (1, rows[3].received)


async def test_a_rejected_message_is_replaced_by_other_content_only(inbox):
    rejection = b"MSH|^~\\&|HEARTH|HOME|APP|FAC|20260102030406||ACK|R1|P|2.5\rMSA|AE|R-1\rERR|||101"
    assert await inbox.receive(A, [message("R-1", body="PID|1", state="rejected", ack=rejection)]) == [None]
    rejected = await inbox.get(A, message("R-1").key)
    assert (rejected.state, rejected.ack) == ("rejected", rejection) and rejected.settled is not None
    assert await inbox.counts(A) == (0, None)
    [same] = await inbox.receive(A, [message("R-1", body="PID|1")])  # identical bytes: the rejection replayed
    assert same.seq == rejected.seq and same.ack == rejection and same.state == "rejected"
    assert await inbox.receive(A, [message("R-1")]) == [None]  # corrected content: processed anew
    replaced = await inbox.get(A, message("R-1").key)
    assert (replaced.state, replaced.digest, replaced.ack, replaced.settled) == (
        "pending", message("R-1").digest, None, None)
    assert replaced.seq > rejected.seq
    [duplicate] = await inbox.receive(A, [message("R-1", body="PID|1|other")])  # pending now: a plain duplicate
    assert duplicate.seq == replaced.seq and duplicate.digest == message("R-1").digest


async def test_connectors_do_not_collide(inbox):
    assert await inbox.receive(A, [message("K-1")]) == [None]
    assert await inbox.receive(B, [message("K-1", body="PID|2")]) == [None]
    a, b = await inbox.get(A, message("K-1").key), await inbox.get(B, message("K-1").key)
    assert a.seq != b.seq and (a.connector, b.connector) == (A, B) and a.digest != b.digest
    assert [row.seq for row in await inbox.claim(B, "w", 5, 60)] == [b.seq]
    assert await inbox.counts(A) == (1, a.received) and await inbox.counts(B) == (1, b.received)


async def test_sqlite_rows_survive_a_restart(tmp_path):
    store = make_store("sqlite", tmp_path)
    inbox = hl7_inbox(store)
    await inbox.open()
    await inbox.receive(A, [message("D-1", ack=b"MSA|AA|D-1")])
    await store.close()  # as if the process ended right after the ACK
    store = make_store("sqlite", tmp_path)
    try:
        inbox = hl7_inbox(store)
        await inbox.open()
        [duplicate] = await inbox.receive(A, [message("D-1")])
        assert duplicate.ack == b"MSA|AA|D-1" and duplicate.raw == message("D-1").raw
        assert (await inbox.counts(A))[0] == 1
    finally:
        await store.close()
