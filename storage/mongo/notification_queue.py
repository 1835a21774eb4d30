"""The notification queue (subscriptions/queue.py) in MongoDB collections beside the resources.

Events are keyed by (subscription, change seq) and deliveries by the same key, so recording a batch
is idempotent: it works the same with or without multi-document transactions. Event numbers come from one
counter document per subscription, moved on by a single find-and-update that also records the seq it numbered,
so racing dispatchers give each event one number and leave no gaps. A dispatcher that dies
half-way, or loses the race with another one, leaves only rows the next attempt skips; the checkpoint
moves last (compare-and-set), so no change is ever skipped. Claims are single-document
find-and-update operations, atomic on any MongoDB.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Sequence

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from hearth.storage import clock
from hearth.storage.notification_records import Delivery, Event, NewEvent

_DISPATCHER = "dispatcher"


class MongoNotificationQueue:
    def __init__(self, store: Any) -> None:
        db = store.db
        self.checkpoints = db.get_collection("subscription_checkpoint")
        self.event_rows = db.get_collection("subscription_events")
        self.counters = db.get_collection("subscription_counters")
        self.deliveries = db.get_collection("subscription_deliveries")
        self.secrets = db.get_collection("subscription_secret")

    async def open(self) -> None:
        await self.event_rows.create_index([("subscription", ASCENDING), ("number", ASCENDING)])
        await self.deliveries.create_index([("due", ASCENDING)])
        await self.deliveries.create_index([("subscription", ASCENDING)])

    async def checkpoint(self) -> int:
        document = await self.checkpoints.find_one({"_id": _DISPATCHER})
        return document["seq"] if document else 0

    async def enqueue(self, after_seq: int, upto_seq: int, events: Sequence[NewEvent],
                      handshakes: Sequence[tuple[str, int]], now: float) -> bool:
        if await self.checkpoint() != after_seq:
            return False
        for subscription, seq in handshakes:
            await self._insert_delivery(f"{subscription}|{seq}|handshake", subscription, "handshake", None, now)
        for event in events:
            key = f"{event.subscription}|{event.seq}"
            number = await self._number(event)
            if number is None:
                continue  # recorded by an earlier, interrupted attempt or by another dispatcher
            try:
                await self.event_rows.insert_one({
                    "_id": key, "subscription": event.subscription, "number": number, "seq": event.seq,
                    "type": event.type, "id": event.id, "version_id": event.version_id,
                    "interaction": event.interaction, "timestamp": clock.to_text(event.timestamp)})
            except DuplicateKeyError:
                continue
            if event.deliver:
                await self._insert_delivery(key, event.subscription, "event", number, now)
        if after_seq == 0:
            try:
                await self.checkpoints.insert_one({"_id": _DISPATCHER, "seq": upto_seq})
                return True
            except DuplicateKeyError:
                pass
        moved = await self.checkpoints.update_one({"_id": _DISPATCHER, "seq": after_seq},
                                                  {"$set": {"seq": upto_seq}})
        return moved.matched_count == 1

    async def _number(self, event: NewEvent) -> int | None:
        """The event's number: its subscription's counter moves on once per event, atomically, and remembers the seq
        it moved on for (so whoever records that event uses the same number); None when the counter is past it (a
        dispatcher records each event before numbering the next, so this one is recorded)."""
        try:
            counter = await self.counters.find_one_and_update(
                {"_id": event.subscription, "seq": {"$not": {"$gte": event.seq}}},
                {"$inc": {"events": 1}, "$set": {"seq": event.seq}}, upsert=True,
                return_document=ReturnDocument.AFTER)
        except DuplicateKeyError:  # the counter exists, at this event or past it: numbered already
            counter = await self.counters.find_one({"_id": event.subscription})
            if counter["seq"] != event.seq:
                return None
        return counter["events"]

    async def _insert_delivery(self, key: str, subscription: str, kind: str, number: int | None, now: float) -> None:
        try:
            await self.deliveries.insert_one({"_id": key, "subscription": subscription, "kind": kind,
                                              "number": number, "created": now, "due": now, "attempts": 0,
                                              "owner": None, "lease_until": 0.0, "error": None})
        except DuplicateKeyError:
            pass

    async def add_delivery(self, subscription: str, kind: str, now: float) -> None:
        await self._insert_delivery(uuid.uuid4().hex, subscription, kind, None, now)

    async def due(self, now: float) -> bool:
        return await self.deliveries.find_one({"due": {"$lte": now}, "lease_until": {"$lte": now}},
                                              {"_id": 1}) is not None

    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int) -> list[Delivery]:
        claimed = []
        for _ in range(limit):
            document = await self.deliveries.find_one_and_update(
                {"due": {"$lte": now}, "lease_until": {"$lte": now}},
                {"$set": {"owner": owner, "lease_until": now + lease_seconds}},
                sort=[("due", ASCENDING)], return_document=ReturnDocument.AFTER)
            if document is None:
                break
            claimed.append(Delivery(document["_id"], document["subscription"], document["kind"], document["number"],
                                    document["created"], document["attempts"], owner))
        return claimed

    async def lease_owners(self, now: float) -> set[str]:
        return {owner for owner in await self.deliveries.distinct("owner", {"lease_until": {"$gt": now}}) if owner}

    async def release(self, owner: str) -> None:
        await self.deliveries.update_many({"owner": owner}, {"$set": {"owner": None, "lease_until": 0.0}})

    async def complete(self, delivery: Delivery) -> None:
        await self.deliveries.delete_one({"_id": delivery.key, "owner": delivery.owner})

    async def retry(self, delivery: Delivery, due: float, error: str | None, attempted: bool) -> None:
        update: dict[str, Any] = {"$set": {"due": due, "owner": None, "lease_until": 0.0},
                                  "$inc": {"attempts": int(attempted)}}
        if error is not None:
            update["$set"]["error"] = error
        await self.deliveries.update_one({"_id": delivery.key, "owner": delivery.owner}, update)

    async def drop(self, subscription: str) -> None:
        await self.deliveries.delete_many({"subscription": subscription})

    async def events(self, subscription: str, first: int, last: int | None, limit: int) -> list[Event]:
        number: dict[str, int] = {"$gte": first}
        if last is not None:
            number["$lte"] = last
        documents = await self.event_rows.find({"subscription": subscription, "number": number}) \
            .sort("number", ASCENDING).limit(limit).to_list(None)
        return [Event(d["subscription"], d["number"], d["seq"], d["type"], d["id"], d["version_id"],
                      d["interaction"], clock.from_text(d["timestamp"])) for d in documents]

    async def event_count(self, subscription: str) -> int:
        document = await self.counters.find_one({"_id": subscription})
        return document["events"] if document else 0

    async def secret(self) -> bytes:
        document = await self.secrets.find_one_and_update(
            {"_id": "websocket"}, {"$setOnInsert": {"key": os.urandom(32)}}, upsert=True,
            return_document=ReturnDocument.AFTER)
        return bytes(document["key"])
