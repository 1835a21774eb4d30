"""`$expunge` on MongoDB (storage/base.py `Store.expunge`).

Not one transaction (a large expunge would outgrow one): each step leaves the data consistent. History is walked
oldest first (by seq), so a deleted resource's tombstone, its newest version, goes last; its `resources` document
is removed first, and only while it is still that tombstone (a resource created again meanwhile keeps its
history). A version whose resource document is gone (an expunge stopped half-way) is removed with the deleted
ones."""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING

from hearth.storage.mongo.documents import resource_key

_BATCH = 500  # history documents read and removed per round trip


async def expunge(store: Any, resource_type: str | None, resource_id: str | None, deleted: bool, previous: bool,
                  limit: int) -> int:
    """See Store.expunge; `store` is a MongoStore."""
    if not (deleted or previous) or limit <= 0:
        return 0
    scope = {key: value for key, value in (("type", resource_type), ("id", resource_id)) if value is not None}
    currents: dict[str, dict[str, Any] | None] = {}
    history, removed = [], 0
    cursor = store.history_versions.find(scope, {"type": 1, "id": 1, "version_id": 1, "seq": 1}) \
        .sort("seq", ASCENDING).batch_size(_BATCH)
    async for version in cursor:
        key = resource_key(version["type"], version["id"])
        if key not in currents:
            currents[key] = await store.resources.find_one({"_id": key}, {"version_id": 1, "deleted": 1})
        current = currents[key]
        older = current is not None and version["version_id"] < current["version_id"]
        if not (previous and older) and not (deleted and (current is None or current["deleted"])):
            continue
        if current is not None and not older:  # a deleted resource's tombstone: the resource goes first
            result = await store.resources.delete_one({"_id": key, "version_id": current["version_id"],
                                                       "deleted": True})
            if result.deleted_count == 0:  # created again meanwhile: it keeps its history (read it afresh)
                del currents[key]
                continue
            currents[key] = None
        history.append(version)
        if len(history) >= _BATCH:
            removed += await _remove(store, history)
            history = []
        if removed + len(history) >= limit:
            break
    return removed + (await _remove(store, history) if history else 0)


async def _remove(store: Any, versions: list[dict[str, Any]]) -> int:
    await store.change_log.delete_many({"_id": {"$in": [v["seq"] for v in versions]}})
    await store.history_versions.delete_many({"_id": {"$in": [v["_id"] for v in versions]}})
    return len(versions)


async def expunge_everything(store: Any) -> int:
    """Every resource, version and change-log row; the seq counter stays, so sequence numbers are not reused."""
    removed = await store.history_versions.count_documents({})
    for collection in (store.resources, store.history_versions, store.change_log, store.locks):
        await collection.delete_many({})
    return removed
