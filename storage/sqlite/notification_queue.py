"""The notification queue (subscriptions/queue.py) in SQLite tables beside the resources.

Every change runs on the store's writer connection (`run_write`), inside its transaction: the
checkpoint compare-and-set and the events it covers commit together, and a claim's select-then-lease
is atomic even across processes (the writer begins its transactions IMMEDIATE).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

from hearth.storage import clock
from hearth.storage.notification_records import Delivery, Event, NewEvent

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS subscription_checkpoint (name TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS subscription_events (
        subscription TEXT NOT NULL,
        number INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        interaction TEXT NOT NULL,
        timestamp TEXT NOT NULL,
        PRIMARY KEY (subscription, number)) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS subscription_counters (subscription TEXT PRIMARY KEY, events INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS subscription_deliveries (
        key INTEGER PRIMARY KEY,
        subscription TEXT NOT NULL,
        kind TEXT NOT NULL,
        number INTEGER,
        created REAL NOT NULL,
        due REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        error TEXT)""",
    "CREATE INDEX IF NOT EXISTS subscription_deliveries_due ON subscription_deliveries (due)",
    "CREATE INDEX IF NOT EXISTS subscription_deliveries_sub ON subscription_deliveries (subscription)",
    "CREATE TABLE IF NOT EXISTS subscription_secret (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)",
)

_DISPATCHER = "dispatcher"
_INSERT_DELIVERY = ("INSERT INTO subscription_deliveries (subscription, kind, number, created, due) "
                    "VALUES (?, ?, ?, ?, ?)")


def _next_number(conn: sqlite3.Connection, subscription: str) -> int:
    row = conn.execute("INSERT INTO subscription_counters VALUES (?, 1) ON CONFLICT (subscription) "
                       "DO UPDATE SET events = events + 1 RETURNING events", (subscription,)).fetchone()
    return row[0]


def _create_tables(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def _enqueue(conn: sqlite3.Connection, after_seq: int, upto_seq: int, events: Sequence[NewEvent],
             handshakes: Sequence[tuple[str, int]], now: float) -> bool:
    row = conn.execute("SELECT seq FROM subscription_checkpoint WHERE name = ?", (_DISPATCHER,)).fetchone()
    if (row[0] if row else 0) != after_seq:
        return False
    conn.execute("INSERT INTO subscription_checkpoint VALUES (?, ?) ON CONFLICT (name) "
                 "DO UPDATE SET seq = excluded.seq", (_DISPATCHER, upto_seq))
    for subscription, _ in handshakes:
        conn.execute(_INSERT_DELIVERY, (subscription, "handshake", None, now, now))
    for event in events:
        number = _next_number(conn, event.subscription)
        conn.execute("INSERT INTO subscription_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     (event.subscription, number, event.seq, event.type, event.id, event.version_id,
                      event.interaction, clock.to_text(event.timestamp)))
        if event.deliver:
            conn.execute(_INSERT_DELIVERY, (event.subscription, "event", number, now, now))
    return True


def _claim(conn: sqlite3.Connection, owner: str, now: float, lease_seconds: float, limit: int) -> list[Delivery]:
    rows = conn.execute(
        "SELECT key, subscription, kind, number, created, attempts FROM subscription_deliveries "
        "WHERE due <= ? AND lease_until <= ? ORDER BY due, key LIMIT ?", (now, now, limit)).fetchall()
    conn.executemany("UPDATE subscription_deliveries SET owner = ?, lease_until = ? WHERE key = ?",
                     [(owner, now + lease_seconds, row[0]) for row in rows])
    return [Delivery(*row, owner) for row in rows]


def _execute(conn: sqlite3.Connection, sql: str, parameters: tuple) -> None:
    conn.execute(sql, parameters)


def _secret(conn: sqlite3.Connection) -> bytes:
    conn.execute("INSERT OR IGNORE INTO subscription_secret VALUES (1, randomblob(32))")
    return bytes(conn.execute("SELECT key FROM subscription_secret").fetchone()[0])


class SqliteNotificationQueue:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def open(self) -> None:
        await self.store.run_write(_create_tables)

    async def checkpoint(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM subscription_checkpoint WHERE name = ?", (_DISPATCHER,)).fetchone()
            return row[0] if row else 0
        return await self.store.run_read(work)

    async def enqueue(self, after_seq: int, upto_seq: int, events: Sequence[NewEvent],
                      handshakes: Sequence[tuple[str, int]], now: float) -> bool:
        return await self.store.run_write(_enqueue, after_seq, upto_seq, events, handshakes, now)

    async def add_delivery(self, subscription: str, kind: str, now: float) -> None:
        await self.store.run_write(_execute, _INSERT_DELIVERY, (subscription, kind, None, now, now))

    async def due(self, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM subscription_deliveries WHERE due <= ? AND lease_until <= ? LIMIT 1",
                                (now, now)).fetchone() is not None
        return await self.store.run_read(work)

    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int) -> list[Delivery]:
        return await self.store.run_write(_claim, owner, now, lease_seconds, limit)

    async def lease_owners(self, now: float) -> set[str]:
        def work(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(
                "SELECT DISTINCT owner FROM subscription_deliveries WHERE lease_until > ? AND owner IS NOT NULL",
                (now,))}
        return await self.store.run_read(work)

    async def release(self, owner: str) -> None:
        await self.store.run_write(_execute, "UPDATE subscription_deliveries SET owner = NULL, lease_until = 0 "
                                   "WHERE owner = ?", (owner,))

    async def complete(self, delivery: Delivery) -> None:
        await self.store.run_write(_execute, "DELETE FROM subscription_deliveries WHERE key = ? AND owner = ?",
                                   (delivery.key, delivery.owner))

    async def retry(self, delivery: Delivery, due: float, error: str | None, attempted: bool) -> None:
        await self.store.run_write(
            _execute, "UPDATE subscription_deliveries SET due = ?, error = coalesce(?, error), "
            "attempts = attempts + ?, owner = NULL, lease_until = 0 WHERE key = ? AND owner = ?",
            (due, error, int(attempted), delivery.key, delivery.owner))

    async def drop(self, subscription: str) -> None:
        await self.store.run_write(_execute, "DELETE FROM subscription_deliveries WHERE subscription = ?",
                                   (subscription,))

    async def events(self, subscription: str, first: int, last: int | None, limit: int) -> list[Event]:
        def work(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT subscription, number, seq, type, id, version_id, interaction, timestamp "
                "FROM subscription_events WHERE subscription = ? AND number >= ? AND number <= ? "
                "ORDER BY number LIMIT ?", (subscription, first, last if last is not None else 2 ** 62, limit))
            return [Event(*row[:7], clock.from_text(row[7])) for row in rows]
        return await self.store.run_read(work)

    async def event_count(self, subscription: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT events FROM subscription_counters WHERE subscription = ?",
                               (subscription,)).fetchone()
            return row[0] if row else 0
        return await self.store.run_read(work)

    async def secret(self) -> bytes:
        return await self.store.run_write(_secret)
