"""Records (storage/base.py) in one MongoDB collection (`security_records`, `connector_records`, `job_records`),
`_id` = "kind|name".

`add` is an insert that fails on a duplicate key and `take` a find-and-delete: both atomic across replicas."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Sequence

from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from hearth.storage.base import Lease, LeaseLost
from hearth.storage.mongo.leases import MongoLeases


class MongoRecords:
    def __init__(self, store: Any, collection: str) -> None:
        self.records = store.db.get_collection(collection)
        self.leases = MongoLeases(store)

    async def open(self) -> None:
        await self.records.create_index([("kind", ASCENDING), ("name", ASCENDING)])

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.records.find_one({"_id": f"{kind}|{name}"})
        return None if found is None or _expired(found) else found["document"]

    async def get_many(self, kind: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not names:
            return {}
        found = self.records.find({"_id": {"$in": [f"{kind}|{name}" for name in names]}})
        return {record["name"]: record["document"] async for record in found if not _expired(record)}

    async def put(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None, *,
                  fence: Lease | None = None) -> None:
        if fence is None:
            await self.records.replace_one({"_id": f"{kind}|{name}"}, _record(kind, name, document, expires),
                                           upsert=True)
            return
        # Two documents cannot be checked and written atomically without a transaction: the lease is checked first,
        # and the record keeps the token it was written under, so that nothing written under an older token
        # replaces it (a takeover between the check and the write can let one older write land, never after the
        # new holder's first)
        await self.leases.check(fence)
        try:
            await self.records.replace_one(
                {"_id": f"{kind}|{name}", "$or": [{"fence": {"$lte": fence.token}}, {"fence": {"$exists": False}}]},
                {**_record(kind, name, document, expires), "fence": fence.token}, upsert=True)
        except DuplicateKeyError:  # the record exists under a newer token: the upsert's insert collided
            raise LeaseLost(fence) from None

    async def put_many(self, kind: str, documents: dict[str, dict[str, Any]]) -> None:
        # one replace each, together (mongomock, which the tests run on, cannot take bulk_write's ReplaceOne)
        await asyncio.gather(*(self.put(kind, name, document) for name, document in documents.items()))

    async def add(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> bool:
        await self.records.delete_many({"kind": kind, "expires": {"$lt": time.time()}})
        try:
            await self.records.insert_one({"_id": f"{kind}|{name}", **_record(kind, name, document, expires)})
        except DuplicateKeyError:
            return False
        return True

    async def take(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.records.find_one_and_delete({"_id": f"{kind}|{name}"})
        return None if found is None or _expired(found) else found["document"]

    async def delete(self, kind: str, name: str) -> bool:
        return (await self.records.delete_one({"_id": f"{kind}|{name}"})).deleted_count == 1

    async def list(self, kind: str, limit: int | None = None) -> list[dict[str, Any]]:
        found = self.records.find({"kind": kind}).sort("name", ASCENDING)
        if limit:
            found = found.limit(limit)
        return [record["document"] async for record in found if not _expired(record)]


def _record(kind: str, name: str, document: dict[str, Any], expires: float | None) -> dict[str, Any]:
    return {"kind": kind, "name": name, "document": document, "expires": expires}


def _expired(record: dict[str, Any]) -> bool:
    return record.get("expires") is not None and record["expires"] < time.time()
