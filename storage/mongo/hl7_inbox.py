"""The HL7 v2 inbox (storage/base.py Hl7Inbox) in one MongoDB collection, `hl7_inbox`, beside the resources.

A unique index on (connector, key) makes each insert-if-absent atomic across processes; `seq` (arrival order) comes
from the store's `counters` collection (document `hl7_inbox`). Every write is a single-document operation, so no
transaction is needed; a frame's rows (a batch) are inserted one after the other: a crash half-way leaves the first
ones stored, and the sender's retry of the frame finds them as duplicates. Claims are find-and-update operations.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from hearth.storage.base import InboxRow, NewInboxRow

_STATES = ("pending", "done", "failed", "rejected")
_COUNTER = "hl7_inbox"


class MongoHl7Inbox:
    def __init__(self, store: Any) -> None:
        self.rows = store.db.get_collection("hl7_inbox")
        self.counters = store.db.get_collection("counters")

    async def open(self) -> None:
        await self.rows.create_index([("connector", ASCENDING), ("key", ASCENDING)], unique=True)
        await self.rows.create_index([("connector", ASCENDING), ("state", ASCENDING), ("seq", ASCENDING)])

    async def _next_seq(self) -> int:
        counter = await self.counters.find_one_and_update({"_id": _COUNTER}, {"$inc": {"seq": 1}}, upsert=True,
                                                          return_document=ReturnDocument.AFTER)
        return counter["seq"]

    async def receive(self, connector: str, rows: Sequence[NewInboxRow]) -> list[InboxRow | None]:
        for row in rows:
            if row.state not in _STATES:
                raise ValueError(f"no inbox state {row.state!r}")
        return [await self._receive_one(connector, row) for row in rows]

    async def _receive_one(self, connector: str, row: NewInboxRow) -> InboxRow | None:
        while True:
            existing = await self.rows.find_one({"connector": connector, "key": row.key})
            now = time.time()
            if existing is None:
                try:
                    await self.rows.insert_one(_document(connector, row, await self._next_seq(), now))
                    return None
                except DuplicateKeyError:
                    continue  # another receiver stored it meanwhile: that one is the existing row
            if existing["state"] != "rejected" or existing["digest"] == row.digest:
                return _row(existing)
            # a rejected message sent again with other content: replaced, and processed anew (a new seq)
            replaced = await self.rows.find_one_and_replace(
                {"_id": existing["_id"], "state": "rejected", "digest": existing["digest"]},
                _document(connector, row, await self._next_seq(), now))
            if replaced is not None:
                return None

    async def get(self, connector: str, key: str) -> InboxRow | None:
        found = await self.rows.find_one({"connector": connector, "key": key})
        return None if found is None else _row(found)

    async def claim(self, connector: str, owner: str, limit: int, lease_seconds: float) -> list[InboxRow]:
        claimed = []
        now = time.time()
        for _ in range(max(limit, 0)):
            document = await self.rows.find_one_and_update(
                {"connector": connector, "state": "pending", "lease_until": {"$lte": now}},
                {"$set": {"owner": owner, "lease_until": now + lease_seconds}, "$inc": {"attempts": 1}},
                sort=[("seq", ASCENDING)], return_document=ReturnDocument.AFTER)
            if document is None:
                break
            claimed.append(_row(document))
        return claimed

    async def settle(self, connector: str, seq: int, state: str | None, ack: bytes | None = None,
                     app_ack: bytes | None = None, error: str | None = None, result: Any = None) -> bool:
        if state not in ("done", "failed", "rejected", None):
            raise ValueError(f"no inbox state {state!r}")
        values = {"ack": ack, "app_ack": app_ack, "error": error, "result": result}
        update: dict[str, Any] = {name: value for name, value in values.items() if value is not None}
        if state is not None:
            update.update(state=state, settled=time.time(), owner=None, lease_until=0.0)
        if not update:
            return await self.rows.find_one({"connector": connector, "seq": seq}, {"_id": 1}) is not None
        return (await self.rows.update_one({"connector": connector, "seq": seq}, {"$set": update})).matched_count == 1

    async def reopen(self, connector: str, seq: int) -> bool:
        reopened = await self.rows.update_one(
            {"connector": connector, "seq": seq, "state": {"$ne": "pending"}},
            {"$set": {"state": "pending", "settled": None, "owner": None, "lease_until": 0.0}})
        return reopened.matched_count == 1

    async def release(self, connector: str) -> int:
        released = await self.rows.update_many({"connector": connector, "state": "pending", "lease_until": {"$gt": 0}},
                                               {"$set": {"owner": None, "lease_until": 0.0}})
        return released.modified_count

    async def counts(self, connector: str) -> tuple[int, float | None]:
        pending = {"connector": connector, "state": "pending"}
        count = await self.rows.count_documents(pending)
        if not count:
            return 0, None
        oldest = await self.rows.find(pending, {"received": 1}).sort("received", ASCENDING).limit(1).to_list(None)
        return count, oldest[0]["received"] if oldest else None

    async def purge(self, connector: str, before: float) -> int:
        purged = await self.rows.delete_many({"connector": connector, "state": {"$ne": "pending"},
                                              "settled": {"$lt": before}})
        return purged.deleted_count


def _document(connector: str, row: NewInboxRow, seq: int, now: float) -> dict[str, Any]:
    return {"seq": seq, "connector": connector, "key": row.key, "digest": row.digest, "state": row.state,
            "received": now, "settled": None if row.state == "pending" else now, "raw": bytes(row.raw),
            "charset": row.charset, "header": row.header, "ack": row.ack, "app_ack": row.app_ack, "owner": None,
            "lease_until": 0.0, "attempts": 0, "error": row.error, "result": row.result}


def _row(document: dict[str, Any]) -> InboxRow:
    def blob(value: Any) -> bytes | None:
        return None if value is None else bytes(value)
    return InboxRow(document["seq"], document["connector"], document["key"], document["digest"], document["state"],
                    document["received"], document["settled"], bytes(document["raw"]), document["charset"],
                    document["header"], blob(document["ack"]), blob(document["app_ack"]), document["owner"],
                    document["lease_until"], document["attempts"], document["error"], document["result"])
