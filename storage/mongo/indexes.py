"""The indexes the MongoDB store's reads use, created (and superseded ones dropped) idempotently at start-up.

`resources`: one type in the default order (type, created, _id); a type's current resources (type, _id) and by
last update (type, last_updated, _id), both partial on `deleted: false`, which every search's filter holds, so a
count or a `_lastUpdated` range of a type reads only current resources' keys; (type, id); and one compound
multikey index per entry shape (storage/mongo/documents.py). `history`: per resource, per type and overall,
newest first. `changes`: per type in seq order.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import OperationFailure

_CURRENT = {"deleted": False}

_ENTRY_INDEXES = (
    ("tok", ("c", "s")), ("tok", ("ts", "tc")), ("str", ("n",)), ("str", ("e",)), ("dt", ("lo", "hi")),
    ("dt", ("hi",)), ("num", ("v",)), ("qty", ("c", "v")), ("ref", ("r",)), ("ref", ("i",)), ("ref", ("u",)),
    ("ref", ("iv",)), ("uri", ("v",)), ("comp", ()),
)


class Index(NamedTuple):
    """One index: its keys and, for a partial index, the documents it holds."""

    keys: list[tuple[str, int]]
    partial: dict[str, Any] | None = None


INDEXES: dict[str, list[Index]] = {
    "resources": [
        Index([("type", ASCENDING), ("created", ASCENDING), ("_id", ASCENDING)]),  # one type in the default order
        Index([("type", ASCENDING), ("_id", ASCENDING)], _CURRENT),
        Index([("type", ASCENDING), ("last_updated", ASCENDING), ("_id", ASCENDING)], _CURRENT),
        Index([("type", ASCENDING), ("id", ASCENDING)]),
        *(Index([("type", ASCENDING), (f"{array}.p", ASCENDING), *((f"{array}.{f}", ASCENDING) for f in fields)])
          for array, fields in _ENTRY_INDEXES),
    ],
    "history": [
        Index([("type", ASCENDING), ("id", ASCENDING), ("seq", DESCENDING)]),
        Index([("type", ASCENDING), ("seq", DESCENDING)]),
        Index([("seq", DESCENDING)]),
    ],
    "changes": [Index([("type", ASCENDING), ("_id", ASCENDING)])],
}

SUPERSEDED = {"resources": ["type_1_last_updated_1"]}  # by (type, last_updated, _id)

_INDEX_NOT_FOUND = 27


async def create_indexes(db: Any) -> None:
    """Create every index of INDEXES (an existing one is left as it is) and drop the superseded ones."""
    for collection, indexes in INDEXES.items():
        for index in indexes:
            options = {} if index.partial is None else {"partialFilterExpression": index.partial}
            await db.get_collection(collection).create_index(index.keys, **options)
    for collection, names in SUPERSEDED.items():
        existing = await db.get_collection(collection).index_information()
        for name in names:
            if name in existing:
                try:
                    await db.get_collection(collection).drop_index(name)
                except OperationFailure as error:  # another Hearth process dropped it meanwhile
                    if error.code != _INDEX_NOT_FOUND:
                        raise
