"""Leases (storage/base.py) in one MongoDB collection, `leases` (`_id` = the lease's name).

Judged by the database's clock, not each replica's: every operation first reads the time of the server it talks
to (the primary, for writes) from `hello`'s `localTime`, so Hearth hosts whose clocks drift still agree on who
holds a lease. Each change is one atomic single-document operation: renew (same owner), take over (expired: the
token grows) or create (a duplicate key means another owner created it first).
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, OperationFailure

from hearth.storage.base import Lease, LeaseLost


async def server_now(db: Any) -> float:
    """The MongoDB server's clock, epoch seconds; this host's where the server does not tell it (mongomock)."""
    try:
        hello = await db.command("hello")
    except (NotImplementedError, OperationFailure):
        return time.time()
    local = hello.get("localTime")
    return local.timestamp() if local is not None else time.time()


def _lease(document: dict[str, Any]) -> Lease:
    return Lease(document["_id"], document["owner"], document["token"], document["until"])


class MongoLeases:
    def __init__(self, store: Any) -> None:
        self.db = store.db
        self.leases = store.db.get_collection("leases")

    async def open(self) -> None:
        """Nothing to do: the `_id` index is the only one."""

    async def now(self) -> float:
        return await server_now(self.db)

    async def acquire(self, name: str, owner: str, seconds: float) -> Lease | None:
        now = await self.now()
        renewed = await self.leases.find_one_and_update(
            {"_id": name, "owner": owner, "until": {"$gt": now}}, {"$set": {"until": now + seconds}},
            return_document=ReturnDocument.AFTER)
        if renewed is not None:
            return _lease(renewed)
        taken = await self.leases.find_one_and_update(
            {"_id": name, "until": {"$lte": now}}, {"$set": {"owner": owner, "until": now + seconds},
                                                   "$inc": {"token": 1}}, return_document=ReturnDocument.AFTER)
        if taken is not None:
            return _lease(taken)
        try:
            await self.leases.insert_one({"_id": name, "owner": owner, "token": 1, "until": now + seconds})
        except DuplicateKeyError:
            return None
        return Lease(name, owner, 1, now + seconds)

    async def release(self, lease: Lease) -> bool:
        result = await self.leases.update_one(
            {"_id": lease.name, "owner": lease.owner, "token": lease.token, "until": {"$gt": await self.now()}},
            {"$set": {"until": 0}})
        return result.modified_count == 1

    async def holder(self, name: str) -> Lease | None:
        found = await self.leases.find_one({"_id": name})
        return None if found is None else _lease(found)

    async def check(self, lease: Lease) -> None:
        """Raise LeaseLost unless `lease` is held now under its token."""
        held = await self.leases.find_one({"_id": lease.name, "owner": lease.owner, "token": lease.token,
                                           "until": {"$gt": await self.now()}}, {"_id": 1})
        if held is None:
            raise LeaseLost(lease)
