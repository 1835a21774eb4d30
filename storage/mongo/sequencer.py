"""The change log's sequencer on MongoDB: numbers committed versions in commit order, one process at a time.

Commits (storage/mongo/store.py) write their versions' `history` documents with `seq` PENDING and take no number,
so no document is written by every commit. One process, holding the lease `change-log-sequencer`, follows the
inserts of pending history documents with a change stream: the oplog's order, which is commit order, with a
transaction's inserts together and in the order it made them. For each batch of them it writes, in one transaction
(w: majority), the numbered `changes` rows, each version's `seq`, each new resource's `created`, and on the
`counters` document `changes` the last number given (`seq`) and the stream's resume token after the batch
(`resume`). Readers of the change log therefore see only numbered rows, and every number before them: dense, in
commit order.

Fencing: taking over sets the counters document's `fence` to the lease's token (it grows with every takeover), and
every batch is written only while `fence` and `seq` are still as this sequencer last left them; a former
sequencer, paused past its lease, finds them changed and writes nothing (its transaction aborts). Numbers are
deterministic (the next `seq` after the saved token, in stream order), so a batch written again after a crash
before its counter save writes the same rows: the writes are idempotent, and numbers are neither skipped nor given
twice even where a batch is not one transaction.

A database numbered by the counter before (`HEARTH_MONGO_SEQUENCER=counter`, or an older Hearth) goes on from its
`seq`: both modes count on the same field, so a process of the other mode moves `seq` under the sequencer, whose
next batch then finds it changed and starts again from its saved token.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import BulkWriteError

from hearth.storage.base import Lease
from hearth.storage.mongo.documents import PENDING, change_document, resource_key
from hearth.storage.mongo.leases import MongoLeases

log = logging.getLogger("hearth.storage.mongo.sequencer")

LEASE_NAME = "change-log-sequencer"
LEASE_SECONDS = 10.0  # a sequencer that stops is replaced within this; commits wait for their numbers longer
BATCH = 200  # versions numbered per transaction (each one branch of a $switch: keep it small)
IDLE_SAVE = 60.0  # seconds between saves of an idle stream's resume token, so that it never falls off the oplog
COUNTER = "changes"  # the `counters` document: `seq`, and the sequencer's `resume`, `start` and `fence`

# the inserts of versions not numbered yet (a counter-numbered version is not pending), without their bodies
PIPELINE = [{"$match": {"operationType": "insert", "fullDocument.seq": PENDING}},
            {"$project": {"fullDocument.body": 0}}]

_DUPLICATE_KEY = 11000


class Superseded(Exception):
    """The counters document is no longer as this sequencer left it: its lease was taken over, or a process numbering
    by the counter moved `seq`."""


class Sequencer:
    """One process's candidacy for the sequencer: `run` holds the lease whenever it is free and numbers while held."""

    lease_seconds = LEASE_SECONDS

    def __init__(self, store: Any, owner: str) -> None:
        """`store`: a MongoStore; `owner`: this process's lease owner (storage/owners.py `new_owner`)."""
        self.store, self.owner = store, owner
        self.leases = MongoLeases(store)

    async def run(self) -> None:
        while True:
            try:
                lease = await self.leases.acquire(LEASE_NAME, self.owner, self.lease_seconds)
                if lease is not None:
                    await self.lead(lease)
            except Superseded as superseded:
                log.info("change-log sequencer superseded: %s", superseded)
            except Exception:  # the database away for a moment, the stream failed: start again from the saved token
                log.exception("numbering the change log failed; starting again from the saved resume token")
            await asyncio.sleep(self.lease_seconds / 4)

    async def lead(self, lease: Lease) -> None:
        """Number what the change stream brings while `lease` is held (its lease given up when this ends)."""
        try:
            state = await self.claim(lease)
            stream = await self.store.history_versions.watch(PIPELINE, max_await_time_ms=1000, **_start(state))
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=BATCH * 10)
            reader = asyncio.create_task(_read(stream, queue))
            try:
                await self._number_from(queue, reader, lease, state)
            finally:
                reader.cancel()
                await stream.close()
        finally:
            await self.leases.release(lease)

    async def _number_from(self, queue: asyncio.Queue[dict[str, Any]], reader: asyncio.Task[None], lease: Lease,
                           state: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        renew_every = self.lease_seconds / 4
        renewed = saved = loop.time()
        while True:
            items = await _next_items(queue, reader, renew_every)
            if loop.time() - renewed >= renew_every:
                renewal = await self.leases.acquire(LEASE_NAME, self.owner, self.lease_seconds)
                if renewal is None or renewal.token != lease.token:
                    raise Superseded(f"lease {lease.token} lost")
                renewed = loop.time()
            events = [item for item in items if "fullDocument" in item]
            if events or (items and loop.time() - saved >= IDLE_SAVE):
                state = await self.number(lease, state, events, items[-1]["_id"])
                saved = loop.time()

    async def claim(self, lease: Lease) -> dict[str, Any]:
        """Fence the counters document with `lease`'s token (refused if a newer one fenced it); its state."""
        state = await self.store.counters.find_one_and_update(
            {"_id": COUNTER, "$or": [{"fence": {"$exists": False}}, {"fence": {"$lte": lease.token}}]},
            {"$set": {"fence": lease.token}}, return_document=ReturnDocument.AFTER)
        if state is None:
            raise Superseded(f"a sequencer with a newer lease than {lease.token} took over")
        return state

    async def number(self, lease: Lease, state: dict[str, Any], events: list[dict[str, Any]],
                     token: Any) -> dict[str, Any]:
        """Number `events` (insert events of pending versions, in stream order) from `state["seq"] + 1`, and save
        `token` (the stream's place after them) and the last number given; the new state. Superseded, with nothing
        written in a transaction, when the counters document is no longer at `state` under `lease`."""
        last = state["seq"] + len(events)

        async def write(session: Any) -> None:
            at = {"_id": COUNTER, "fence": lease.token, "seq": state["seq"]}
            if await self.store.counters.find_one(at, {"_id": 1}, session=session) is None:
                raise Superseded(f"the change log moved past {state['seq']} or lease {lease.token} was taken over")
            if events:
                await self._write_numbers([event["fullDocument"] for event in events], state["seq"] + 1, session)
            saved = await self.store.counters.update_one(at, {"$set": {"seq": last, "resume": token}}, session=session)
            if saved.matched_count != 1:
                raise Superseded(f"the change log moved past {state['seq']} while numbering")

        if self.store.supports_transactions:
            async with self.store.client.start_session() as session:
                await session.with_transaction(write, write_concern=self.store.change_log.write_concern)
        else:  # (tests on mongomock: the writes are idempotent, see the module's docstring)
            await write(None)
        return {**state, "seq": last, "resume": token}

    async def _write_numbers(self, versions: list[dict[str, Any]], first: int, session: Any) -> None:
        """The change rows first (a commit waiting for its numbers reads them from `history`: once it sees them there,
        its rows are in the change log), then each new resource's `created` and each version's `seq`. A version
        already numbered keeps its number unless it is the one given here (written again)."""
        numbers = {version["_id"]: number for number, version in enumerate(versions, first)}
        try:
            await self.store.change_log.insert_many([change_document(version, numbers[version["_id"]])
                                                     for version in versions], ordered=False, session=session)
        except BulkWriteError as error:  # rows of this very batch, written before a crash: the same rows
            if session is not None or any(e["code"] != _DUPLICATE_KEY for e in error.details["writeErrors"]):
                raise
        creates = {resource_key(v["type"], v["id"]): numbers[v["_id"]] for v in versions if v["interaction"] == "create"}
        if creates:
            await self.store.resources.update_many({"_id": {"$in": list(creates)}},
                                                   [{"$set": {"created": _numbered("created", creates)}}],
                                                   session=session)
        await self.store.history_versions.update_many({"_id": {"$in": list(numbers)}},
                                                      [{"$set": {"seq": _numbered("seq", numbers)}}], session=session)


def _numbered(field: str, numbers: dict[str, int]) -> dict[str, Any]:
    """An update expression: `field` of the document whose `_id` is a key of `numbers` becomes its number, if it is
    still PENDING or already that number; unchanged otherwise."""
    return {"$switch": {"branches": [{"case": {"$and": [{"$eq": ["$_id", key]},
                                                        {"$in": [f"${field}", [PENDING, number]]}]},
                                      "then": number} for key, number in numbers.items()],
                        "default": f"${field}"}}


def _start(state: dict[str, Any]) -> dict[str, Any]:
    """Where the stream starts: after the saved token, else at the time recorded before any version was left
    pending (MongoStore.open), else now (a server that told no time: mongomock's test doubles)."""
    if state.get("resume") is not None:
        return {"resume_after": state["resume"]}
    return {"start_at_operation_time": state.get("start")}


async def _read(stream: Any, queue: asyncio.Queue[dict[str, Any]]) -> None:
    """Put each event on `queue`, and after an empty wait a marker `{"_id": token}` of the stream's place (saved now
    and then while idle). Apart from the numbering, so that a batch is numbered as soon as it arrives, not after the
    stream's next wait."""
    while True:
        event = await stream.try_next()
        if event is not None:
            await queue.put(event)
        elif stream.resume_token is not None:
            await queue.put({"_id": stream.resume_token})


async def _next_items(queue: asyncio.Queue[dict[str, Any]], reader: asyncio.Task[None],
                      timeout: float) -> list[dict[str, Any]]:
    """What the reader has put on `queue` (waiting up to `timeout` for the first), at most BATCH; raises the reader's
    error if it stopped."""
    if reader.done():
        reader.result()
    try:
        items = [await asyncio.wait_for(queue.get(), timeout)]
    except TimeoutError:
        return []
    while len(items) < BATCH and not queue.empty():
        items.append(queue.get_nowait())
    return items
