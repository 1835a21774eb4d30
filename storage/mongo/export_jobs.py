"""Bulk Data export jobs (storage/base.py ExportJobs) in one MongoDB collection, `export_jobs`, beside the resources.

Each job is one document (its `_id` the job id), so every change is a single-document operation and needs no
transaction; a claim is one find-and-update, atomic across processes. The limit of `add` is kept by the database:
an accepted or running job holds one of `limit` numbered slots under a unique index, so two kick-offs at the same
instant on two processes cannot both take the last one; a finished job gives its slot up.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

_ACTIVE = {"$in": ["accepted", "in-progress"]}


def _job(document: dict[str, Any] | None) -> dict[str, Any] | None:
    if document is None:
        return None
    document.pop("_id", None)
    return document


class MongoExportJobs:
    def __init__(self, store: Any) -> None:
        self.jobs = store.db.get_collection("export_jobs")

    async def open(self) -> None:
        await self.jobs.create_index([("state", ASCENDING), ("created", ASCENDING)])
        await self.jobs.create_index("slot", unique=True, sparse=True)  # only active jobs hold one

    async def add(self, job: dict[str, Any], limit: int) -> bool:
        for slot in range(limit):
            try:
                await self.jobs.insert_one({"_id": job["id"], **job, "slot": slot})
                return True
            except DuplicateKeyError:
                continue
        return False

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return _job(await self.jobs.find_one({"_id": job_id}))

    async def claim(self, owner: str, lease_seconds: float, now: float) -> dict[str, Any] | None:
        return _job(await self.jobs.find_one_and_update(
            {"state": _ACTIVE, "lease_until": {"$lte": now}},
            {"$set": {"state": "in-progress", "lease_owner": owner, "lease_until": now + lease_seconds},
             "$inc": {"attempts": 1}},
            sort=[("created", ASCENDING)], return_document=ReturnDocument.AFTER))

    async def save(self, job: dict[str, Any], owner: str) -> bool:
        document = {"_id": job["id"], **job}
        if job["state"] not in _ACTIVE["$in"]:
            document.pop("slot", None)  # finished: the slot is free for the next kick-off
        result = await self.jobs.replace_one({"_id": job["id"], "lease_owner": owner, "state": "in-progress"},
                                             document)
        return result.matched_count == 1

    async def release(self, owner: str) -> int:
        result = await self.jobs.update_many({"lease_owner": owner, "state": "in-progress"},
                                             {"$set": {"state": "accepted", "lease_owner": None, "lease_until": 0}})
        return result.modified_count

    async def owners(self) -> list[str]:
        return [owner for owner in await self.jobs.distinct("lease_owner", {"state": "in-progress"}) if owner]

    async def remove(self, job_id: str) -> bool:
        return (await self.jobs.delete_one({"_id": job_id})).deleted_count == 1

    async def expired(self, now: float) -> list[str]:
        return [document["_id"] async for document in
                self.jobs.find({"expires": {"$ne": None, "$lt": now}}, {"_id": 1})]
