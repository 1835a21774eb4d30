"""Records (storage/base.py) in one SQLite table beside the resources (`security_records`, `connector_records`,
`job_records`).

Writes run on the store's writer (`run_write`), so `add` and `take` are atomic across processes."""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Sequence

import orjson

from hearth.storage.base import Lease
from hearth.storage.sqlite import leases

_TABLES = ("security_records", "connector_records", "job_records")  # the only names interpolated into SQL


def _create(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"""CREATE TABLE IF NOT EXISTS {table} (
        kind TEXT NOT NULL, name TEXT NOT NULL, document BLOB NOT NULL, expires REAL,
        PRIMARY KEY (kind, name)) WITHOUT ROWID""")


def _put(conn: sqlite3.Connection, table: str, rows: list[tuple[str, str, bytes, float | None]],
         fence: Lease | None = None) -> None:
    if fence is not None:
        leases.check(conn, fence)
    conn.executemany(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?)", rows)


def _add(conn: sqlite3.Connection, table: str, kind: str, name: str, document: bytes, expires: float | None,
         now: float) -> bool:
    conn.execute(f"DELETE FROM {table} WHERE kind = ? AND expires IS NOT NULL AND expires < ?", (kind, now))
    return conn.execute(f"INSERT OR IGNORE INTO {table} VALUES (?, ?, ?, ?)",
                        (kind, name, document, expires)).rowcount == 1


def _take(conn: sqlite3.Connection, table: str, kind: str, name: str, now: float) -> bytes | None:
    row = conn.execute(f"DELETE FROM {table} WHERE kind = ? AND name = ? RETURNING document, expires",
                       (kind, name)).fetchone()
    return None if row is None or (row[1] is not None and row[1] < now) else bytes(row[0])


def _delete(conn: sqlite3.Connection, table: str, kind: str, name: str) -> bool:
    return conn.execute(f"DELETE FROM {table} WHERE kind = ? AND name = ?", (kind, name)).rowcount == 1


class SqliteRecords:
    def __init__(self, store: Any, table: str) -> None:
        if table not in _TABLES:
            raise ValueError(f"no records table {table!r}")
        self.store = store  # a SqliteStore: run_read / run_write
        self.table = table

    async def open(self) -> None:
        await self.store.run_write(_create, self.table)

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return (await self.get_many(kind, [name])).get(name)

    async def get_many(self, kind: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        def work(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(f"SELECT name, document FROM {self.table} WHERE kind = ? AND name IN "
                                "(SELECT value FROM json_each(?)) AND (expires IS NULL OR expires >= ?)",
                                (kind, orjson.dumps(list(names)).decode(), time.time())).fetchall()
        if not names:
            return {}
        return {row[0]: orjson.loads(row[1]) for row in await self.store.run_read(work)}

    async def put(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None, *,
                  fence: Lease | None = None) -> None:
        # fenced: the lease is checked in the same transaction (a takeover commits before or after it, never between)
        await self.store.run_write(_put, self.table, [(kind, name, orjson.dumps(document), expires)], fence)

    async def put_many(self, kind: str, documents: dict[str, dict[str, Any]]) -> None:
        if documents:
            await self.store.run_write(_put, self.table, [(kind, name, orjson.dumps(document), None)
                                                          for name, document in documents.items()])

    async def add(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> bool:
        return await self.store.run_write(_add, self.table, kind, name, orjson.dumps(document), expires, time.time())

    async def take(self, kind: str, name: str) -> dict[str, Any] | None:
        found = await self.store.run_write(_take, self.table, kind, name, time.time())
        return None if found is None else orjson.loads(found)

    async def delete(self, kind: str, name: str) -> bool:
        return await self.store.run_write(_delete, self.table, kind, name)

    async def list(self, kind: str, limit: int | None = None) -> list[dict[str, Any]]:
        def work(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(f"SELECT document FROM {self.table} WHERE kind = ? AND (expires IS NULL OR "
                                "expires >= ?) ORDER BY name LIMIT ?", (kind, time.time(), limit or -1)).fetchall()
        return [orjson.loads(row[0]) for row in await self.store.run_read(work)]
