"""The MongoDB change log's sequencer (storage/mongo/sequencer.py), with a simulated change stream over mongomock.

mongomock has neither change streams nor transactions: `FakeOplog` stands in for the oplog of the `history`
collection (every insert of a pending version, in the order the inserts happened, which on one event loop is commit
order) and for its `watch()` (events after a resume token, as the sequencer's pipeline would deliver them). What
only a real replica set shows (the server's order of concurrent transactions, a batch being one transaction) is
not proved here; the sequencer's own logic is: density and order, idempotence after a crash, fencing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient
from pymongo.errors import AutoReconnect

from hearth.storage.mongo import sequencer as sequencing
from hearth.storage.mongo.documents import PENDING
from hearth.storage.mongo.leases import MongoLeases
from hearth.storage.mongo.sequencer import LEASE_NAME, Sequencer, Superseded
from hearth.storage.mongo.store import MongoStore
from hearth.storage.base import Write

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def short_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sequencer, "lease_seconds", 0.4)


class FakeOplog:
    """The `history` collection's inserts of pending versions, and change streams over them."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.grown = asyncio.Event()

    def record(self, document: dict[str, Any]) -> None:
        if document["seq"] == PENDING:  # the pipeline's $match; its $project drops the body
            full = {name: value for name, value in document.items() if name != "body"}
            self.events.append({"_id": {"_data": len(self.events) + 1}, "operationType": "insert",
                                "fullDocument": full})
            self.grown.set()


class FakeStream:
    """A change stream from a place in the oplog: `try_next` gives the next event, or waits a moment (the getMore's
    maxAwaitTimeMS) and gives None; `resume_token` is the place after the last event given (a postBatchResumeToken
    when idle)."""

    def __init__(self, oplog: FakeOplog, position: int) -> None:
        self.oplog, self.position = oplog, position
        self.resume_token: dict[str, int] | None = {"_data": position}

    async def try_next(self) -> dict[str, Any] | None:
        if self.position >= len(self.oplog.events):
            self.oplog.grown.clear()
            try:
                await asyncio.wait_for(self.oplog.grown.wait(), 0.05)
            except TimeoutError:
                return None
            return None
        event = self.oplog.events[self.position]
        self.position += 1
        self.resume_token = event["_id"]
        return event

    async def close(self) -> None:
        pass


class History:
    """The `history` collection as the store uses it, its inserts recorded in `oplog`, its `watch` simulated."""

    def __init__(self, collection: Any, oplog: FakeOplog) -> None:
        self._collection, self._oplog = collection, oplog

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def insert_one(self, document: dict[str, Any], **options: Any) -> Any:
        result = await self._collection.insert_one(dict(document), **options)
        self._oplog.record(document)
        return result

    async def watch(self, pipeline: list[dict[str, Any]], *, resume_after: dict[str, int] | None = None,
                    start_at_operation_time: Any = None, **options: Any) -> FakeStream:
        assert pipeline == sequencing.PIPELINE
        return FakeStream(self._oplog, resume_after["_data"] if resume_after else 0)


def stores_on_one_database(count: int) -> tuple[list[MongoStore], FakeOplog]:
    """`count` stores in stream mode on one mongomock database, as as many processes would open it."""
    client, database, oplog = AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}", FakeOplog()
    stores = [MongoStore(client, database, sequencer="stream") for _ in range(count)]
    for store in stores:
        store.history_versions = History(store.history_versions, oplog)
    return stores, oplog


def write(resource_id: str, version_id: int = 1) -> Write:
    body = b'{"resourceType":"Patient","id":"%s"}' % resource_id.encode()
    return Write("Patient", resource_id, version_id, NOW, body, (), version_id - 1,
                 "create" if version_id == 1 else "update")


async def close(stores: list[MongoStore]) -> None:
    for store in stores:
        await store.close()


async def test_numbers_are_dense_and_in_commit_order_across_processes():
    """Three processes commit at once; one of them numbers: every change once, 1..N in commit order, each commit
    told its own numbers, every version and new resource numbered alike, and no reader ever sees a gap."""
    stores, oplog = stores_on_one_database(3)
    for store in stores:
        await store.open()
    seen: list[list[int]] = []

    async def read() -> None:
        while True:
            seqs = [change.seq for change in await stores[0].changes(0, 10_000)]
            assert seqs == list(range(1, len(seqs) + 1)), "a gap a later write fills"
            seen.append(seqs)
            await asyncio.sleep(0.005)

    reader = asyncio.create_task(read())
    try:
        created = await asyncio.gather(*(stores[n % 3].commit([write(f"p{n}")]) for n in range(60)))
        updated = await asyncio.gather(*(stores[n % 3].commit([write(f"p{n}", 2)]) for n in range(0, 60, 3)))
    finally:
        reader.cancel()
    changes = await stores[1].changes(0, 10_000)
    committed = [(e["fullDocument"]["id"], e["fullDocument"]["version_id"]) for e in oplog.events]
    assert [change.seq for change in changes] == list(range(1, 81))
    assert [(change.id, change.version_id) for change in changes] == committed  # commit (oplog) order
    assert await stores[2].last_seq() == 80 and len(seen) > 1 and seen[-1] != []
    own = {(c.id, c.version_id): c.seq for told in created + updated for c in told}
    assert own == {(change.id, change.version_id): change.seq for change in changes}
    history = await stores[0].history("Patient", None, None, None, 100)
    assert [seq for seq, _ in history.entries] == list(range(80, 0, -1))
    creates = {change.id: change.seq for change in changes if change.interaction == "create"}
    async for resource in stores[0].resources.find({}, {"id": 1, "created": 1}):
        assert resource["created"] == creates[resource["id"]]
    await close(stores)


async def test_a_crash_between_numbers_and_token_neither_skips_nor_duplicates(monkeypatch):
    """The sequencer stops after writing a batch's numbers, before saving its resume token: the next one numbers the
    same versions again from the saved token, with the same numbers."""
    (store,), _ = stores_on_one_database(1)
    crashes = []
    update_one = store.counters.update_one

    async def crash_once(where: dict[str, Any], update: dict[str, Any], **options: Any) -> Any:
        if "resume" in update.get("$set", {}) and not crashes:
            crashes.append(await store.changes(0, 100))
            raise AutoReconnect("connection lost before the token was saved")
        return await update_one(where, update, **options)

    monkeypatch.setattr(store.counters, "update_one", crash_once)
    await store.open()
    first = await asyncio.gather(*(store.commit([write(f"c{n}")]) for n in range(5)))
    second = await store.commit([write("after")])
    changes = await store.changes(0, 100)
    assert crashes and crashes[0] == changes[:len(crashes[0])] and crashes[0]  # written again: the same rows
    assert [change.seq for change in changes] == list(range(1, 7))
    assert sorted(c.seq for told in first for c in told) == list(range(1, 6)) and second[0].seq == 6
    assert (await store.counters.find_one({"_id": "changes"}))["seq"] == 6
    await store.close()


async def test_a_former_sequencer_cannot_number_once_its_lease_is_taken():
    """A sequencer paused past its lease: the new holder fences the counter, and the former one's batch and claim
    are refused, nothing written."""
    (store,), oplog = stores_on_one_database(1)
    leases = MongoLeases(store)
    former = Sequencer(store, "former")
    lease = await leases.acquire(LEASE_NAME, "former", 0.2)  # held before the store's own candidate runs
    await store.open()
    state = await former.claim(lease)
    await asyncio.sleep(0.3)  # paused past its lease: the store's sequencer takes over
    changes = await store.commit([write("x")])
    assert changes[0].seq == 1 and (await leases.holder(LEASE_NAME)).token > lease.token
    before = await store.changes(0, 100)
    with pytest.raises(Superseded):
        await former.number(lease, state, oplog.events[:1], oplog.events[0]["_id"])
    with pytest.raises(Superseded):
        await former.claim(lease)
    assert await store.changes(0, 100) == before
    assert (await store.counters.find_one({"_id": "changes"}))["fence"] > lease.token
    await store.close()


async def test_an_unknown_sequencer_setting_is_refused():
    with pytest.raises(ValueError, match="HEARTH_MONGO_SEQUENCER"):
        MongoStore(AsyncMongoMockClient(), "hearth_bad", sequencer="oplog")
