"""The audit log (security/audit.py) in MongoDB: the append-only `audit_events` collection, `_id` the record's id.

Records of writes are inserted in the writes' own transaction (store.commit); records of reads in batches
(`insert_many`)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Sequence

from pymongo import ASCENDING, DESCENDING

from hearth.storage.base import AuditQuery, AuditRecord


def audit_documents(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    return [{"_id": r.id, "recorded": r.recorded, "agent": r.agent.split(), "outcome": r.outcome,
             "patients": list(r.patients), "entities": list(r.entities), "body": r.body} for r in records]


class MongoAuditLog:
    def __init__(self, store: Any) -> None:
        self.events = store.db.get_collection("audit_events")

    async def open(self) -> None:
        for keys in ([("recorded", DESCENDING), ("_id", DESCENDING)], [("patients", ASCENDING)],
                     [("entities", ASCENDING)], [("agent", ASCENDING)]):
            await self.events.create_index(keys)

    async def close(self) -> None:
        return None  # the store's client is closed with the store

    async def append(self, records: Sequence[AuditRecord]) -> None:
        await self.events.insert_many(audit_documents(records), ordered=False)

    async def purge(self, before: str) -> int:
        return (await self.events.delete_many({"recorded": {"$lt": before}})).deleted_count

    async def read(self, record_id: str) -> bytes | None:
        found = await self.events.find_one({"_id": record_id}, {"body": 1})
        return bytes(found["body"]) if found else None

    async def search(self, query: AuditQuery) -> list[tuple[str, str, bytes]]:
        conditions: list[dict[str, Any]] = []
        recorded = {op: value for op, value in (("$gte", query.since), ("$lte", query.until)) if value is not None}
        if recorded:
            conditions.append({"recorded": recorded})
        for field, value in (("agent", query.agent), ("outcome", query.outcome), ("patients", query.patient),
                             ("entities", query.entity)):
            if value is not None:
                conditions.append({field: value})
        if query.before is not None:
            last, last_id = query.before
            conditions.append({"$or": [{"recorded": {"$lt": last}}, {"recorded": last, "_id": {"$lt": last_id}}]})
        found = self.events.find({"$and": conditions} if conditions else {}, {"recorded": 1, "body": 1}) \
            .sort([("recorded", DESCENDING), ("_id", DESCENDING)]).limit(query.count)
        return [(doc["recorded"], doc["_id"], bytes(doc["body"])) async for doc in found]

    async def export(self, since: str | None = None) -> AsyncIterator[bytes]:
        found = self.events.find({"recorded": {"$gte": since or ""}}, {"body": 1}).sort(
            [("recorded", ASCENDING), ("_id", ASCENDING)])
        async for doc in found:
            yield bytes(doc["body"])
