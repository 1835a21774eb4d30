"""Storage backends behind one Store protocol (storage/base.py)."""

from __future__ import annotations

from typing import Any

from hearth.storage.base import Store


def open_store(url: str, **options: object) -> Store:
    """A Store for `url`: `mongodb://…` / `mongodb+srv://…` for MongoDB, anything else a SQLite file path
    (`sqlite:///relative.db`, `sqlite:////absolute.db` or a plain path). Options: `synchronous` (SQLite),
    `search_timeout` (seconds a search may run; 0: no limit)."""
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from hearth.storage.mongo.store import MongoStore
        return MongoStore.from_url(url, **options)
    from hearth.storage.sqlite.store import SqliteStore
    path = url.removeprefix("sqlite:///")  # sqlite:///rel.db is relative, sqlite:////abs.db absolute
    return SqliteStore(path, synchronous=str(options.get("synchronous", "NORMAL")),
                       search_timeout=float(options.get("search_timeout", 10.0)))


def notification_queue(store: Store) -> Any:
    """The durable notification queue (its protocol: subscriptions/queue.py) in `store`'s own database."""
    if store.name == "sqlite":
        from hearth.storage.sqlite.notification_queue import SqliteNotificationQueue
        return SqliteNotificationQueue(store)
    if store.name == "mongodb":
        from hearth.storage.mongo.notification_queue import MongoNotificationQueue
        return MongoNotificationQueue(store)
    raise ValueError(f"no notification queue for storage '{store.name}'")

