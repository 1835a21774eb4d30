"""The authorization server's records (security/records.py) in one SQLite table beside the resources.

Writes run on the store's writer (`run_write`), so `add` and `take` are atomic across processes."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

SCHEMA = """CREATE TABLE IF NOT EXISTS security_records (
    kind TEXT NOT NULL, name TEXT NOT NULL, document BLOB NOT NULL, expires REAL,
    PRIMARY KEY (kind, name)) WITHOUT ROWID"""


def _create(conn: sqlite3.Connection) -> None:
    conn.execute(SCHEMA)


def _put(conn: sqlite3.Connection, kind: str, name: str, document: bytes, expires: float | None) -> None:
    conn.execute("INSERT OR REPLACE INTO security_records VALUES (?, ?, ?, ?)", (kind, name, document, expires))


def _add(conn: sqlite3.Connection, kind: str, name: str, document: bytes, expires: float | None, now: float) -> bool:
    conn.execute("DELETE FROM security_records WHERE kind = ? AND expires IS NOT NULL AND expires < ?", (kind, now))
    return conn.execute("INSERT OR IGNORE INTO security_records VALUES (?, ?, ?, ?)",
                        (kind, name, document, expires)).rowcount == 1


def _take(conn: sqlite3.Connection, kind: str, name: str, now: float) -> bytes | None:
    row = conn.execute("DELETE FROM security_records WHERE kind = ? AND name = ? RETURNING document, expires",
                       (kind, name)).fetchone()
    return None if row is None or (row[1] is not None and row[1] < now) else bytes(row[0])


def _delete(conn: sqlite3.Connection, kind: str, name: str) -> bool:
    return conn.execute("DELETE FROM security_records WHERE kind = ? AND name = ?", (kind, name)).rowcount == 1


class SqliteSecurityRecords:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def open(self) -> None:
        await self.store.run_write(_create)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        def work(conn: sqlite3.Connection) -> Any:
            return conn.execute("SELECT document, expires FROM security_records WHERE kind = ? AND name = ?",
                                (kind, name)).fetchone()
        row = await self.store.run_read(work)
        if row is None or (row[1] is not None and row[1] < time.time()):
            return None
        return orjson.loads(row[0])

    async def put(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> None:
        await self.store.run_write(_put, kind, name, orjson.dumps(document), expires)

    async def add(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> bool:
        return await self.store.run_write(_add, kind, name, orjson.dumps(document), expires, time.time())

    async def take(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.store.run_write(_take, kind, name, time.time())
        return None if found is None else orjson.loads(found)

    async def delete(self, kind: str, name: str) -> bool:
        return await self.store.run_write(_delete, kind, name)

    async def list(self, kind: str) -> list[dict[str, Any]]:
        def work(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute("SELECT document FROM security_records WHERE kind = ? AND (expires IS NULL OR "
                                "expires >= ?) ORDER BY name", (kind, time.time())).fetchall()
        return [orjson.loads(row[0]) for row in await self.store.run_read(work)]
