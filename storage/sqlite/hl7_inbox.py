"""The HL7 v2 inbox (storage/base.py Hl7Inbox) in one SQLite table beside the resources.

Every write runs on the store's writer (`run_write`), inside its transaction, and returns once committed: a frame's
rows (a whole batch) are inserted in one job, atomically, and the insert-if-absent is atomic across processes, so
the ACK is sent only for durable rows. Reads (`get`, `counts`) run on the readers.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Sequence

import orjson

from hearth.storage.base import InboxRow, NewInboxRow

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS hl7_inbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        connector TEXT NOT NULL,
        key TEXT NOT NULL,
        digest TEXT NOT NULL,
        state TEXT NOT NULL,
        received REAL NOT NULL,
        settled REAL,
        raw BLOB NOT NULL,
        charset TEXT NOT NULL,
        header TEXT NOT NULL,
        ack BLOB,
        app_ack BLOB,
        owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        result TEXT,
        UNIQUE (connector, key))""",
    "CREATE INDEX IF NOT EXISTS hl7_inbox_todo ON hl7_inbox (connector, state, seq)",
)

_STATES = ("pending", "done", "failed", "rejected")
_COLUMNS = ("seq, connector, key, digest, state, received, settled, raw, charset, header, ack, app_ack, owner, "
            "lease_until, attempts, error, result")
_SELECT = f"SELECT {_COLUMNS} FROM hl7_inbox"
_INSERT = ("INSERT INTO hl7_inbox (connector, key, digest, state, received, settled, raw, charset, header, ack, "
           "app_ack, error, result) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")

Stored = tuple  # a row as selected (_COLUMNS), as it crosses back from the writer process


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def _receive(conn: sqlite3.Connection, connector: str, rows: list[tuple], now: float) -> list[Stored | None]:
    """Insert-if-absent each (key, digest, state, raw, charset, header, ack, app_ack, error, result); a rejected
    row whose content differs is replaced (a new seq: processed anew)."""
    found: list[Stored | None] = []
    for key, digest, state, raw, charset, header, ack, app_ack, error, result in rows:
        existing = conn.execute(f"{_SELECT} WHERE connector = ? AND key = ?", (connector, key)).fetchone()
        if existing is not None and existing[4] == "rejected" and existing[3] != digest:
            conn.execute("DELETE FROM hl7_inbox WHERE seq = ?", (existing[0],))
            existing = None
        if existing is None:
            conn.execute(_INSERT, (connector, key, digest, state, now, None if state == "pending" else now, raw,
                                   charset, header, ack, app_ack, error, result))
        found.append(_plain(existing))
    return found


def _claim(conn: sqlite3.Connection, connector: str, owner: str, limit: int, lease_seconds: float,
           now: float) -> list[Stored]:
    seqs = [row[0] for row in conn.execute(
        "SELECT seq FROM hl7_inbox WHERE connector = ? AND state = 'pending' AND lease_until <= ? ORDER BY seq "
        "LIMIT ?", (connector, now, limit))]
    claimed = []
    for seq in seqs:
        row = conn.execute("UPDATE hl7_inbox SET owner = ?, lease_until = ?, attempts = attempts + 1 WHERE seq = ? "
                           f"RETURNING {_COLUMNS}", (owner, now + lease_seconds, seq)).fetchone()
        claimed.append(_plain(row))
    return claimed


def _settle(conn: sqlite3.Connection, connector: str, seq: int, state: str | None, ack: bytes | None,
            app_ack: bytes | None, error: str | None, result: str | None, now: float) -> bool:
    if state is None:
        sql = ("UPDATE hl7_inbox SET ack = coalesce(?, ack), app_ack = coalesce(?, app_ack), "
               "error = coalesce(?, error), result = coalesce(?, result) WHERE connector = ? AND seq = ?")
        parameters: tuple = (ack, app_ack, error, result, connector, seq)
    else:
        sql = ("UPDATE hl7_inbox SET state = ?, settled = ?, owner = NULL, lease_until = 0, ack = coalesce(?, ack), "
               "app_ack = coalesce(?, app_ack), error = coalesce(?, error), result = coalesce(?, result) "
               "WHERE connector = ? AND seq = ?")
        parameters = (state, now, ack, app_ack, error, result, connector, seq)
    return conn.execute(sql, parameters).rowcount == 1


def _reopen(conn: sqlite3.Connection, connector: str, seq: int) -> bool:
    return conn.execute("UPDATE hl7_inbox SET state = 'pending', settled = NULL, owner = NULL, lease_until = 0 "
                        "WHERE connector = ? AND seq = ? AND state != 'pending'", (connector, seq)).rowcount == 1


def _release(conn: sqlite3.Connection, connector: str) -> int:
    return conn.execute("UPDATE hl7_inbox SET owner = NULL, lease_until = 0 WHERE connector = ? AND state = 'pending' "
                        "AND lease_until > 0", (connector,)).rowcount


def _purge(conn: sqlite3.Connection, connector: str, before: float) -> int:
    return conn.execute("DELETE FROM hl7_inbox WHERE connector = ? AND state != 'pending' AND settled < ?",
                        (connector, before)).rowcount


def _plain(row: Any) -> Stored | None:
    """A row of plain values (BLOBs as bytes) that pickles back from the writer process."""
    return None if row is None else tuple(bytes(value) if isinstance(value, memoryview) else value for value in row)


def _row(stored: Stored) -> InboxRow:
    (seq, connector, key, digest, state, received, settled, raw, charset, header, ack, app_ack, owner, lease_until,
     attempts, error, result) = stored
    return InboxRow(seq, connector, key, digest, state, received, settled, bytes(raw), charset, orjson.loads(header),
                    None if ack is None else bytes(ack), None if app_ack is None else bytes(app_ack), owner,
                    lease_until, attempts, error, None if result is None else orjson.loads(result))


def _check(state: str | None, allowed: Sequence[str | None]) -> None:
    if state not in allowed:
        raise ValueError(f"no inbox state {state!r}")


class SqliteHl7Inbox:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def open(self) -> None:
        await self.store.run_write(_create)

    async def receive(self, connector: str, rows: Sequence[NewInboxRow]) -> list[InboxRow | None]:
        for row in rows:
            _check(row.state, _STATES)
        if not rows:
            return []
        found = await self.store.run_write(_receive, connector, [
            (row.key, row.digest, row.state, bytes(row.raw), row.charset, orjson.dumps(row.header).decode(), row.ack,
             row.app_ack, row.error, None if row.result is None else orjson.dumps(row.result).decode())
            for row in rows], time.time())
        return [None if stored is None else _row(stored) for stored in found]

    async def get(self, connector: str, key: str) -> InboxRow | None:
        def work(conn: sqlite3.Connection) -> Stored | None:
            return conn.execute(f"{_SELECT} WHERE connector = ? AND key = ?", (connector, key)).fetchone()
        stored = await self.store.run_read(work)
        return None if stored is None else _row(stored)

    async def claim(self, connector: str, owner: str, limit: int, lease_seconds: float) -> list[InboxRow]:
        if limit <= 0:
            return []
        claimed = await self.store.run_write(_claim, connector, owner, limit, lease_seconds, time.time())
        return [_row(stored) for stored in claimed]

    async def settle(self, connector: str, seq: int, state: str | None, ack: bytes | None = None,
                     app_ack: bytes | None = None, error: str | None = None, result: Any = None) -> bool:
        _check(state, ("done", "failed", "rejected", None))
        return await self.store.run_write(_settle, connector, seq, state, ack, app_ack, error,
                                          None if result is None else orjson.dumps(result).decode(), time.time())

    async def reopen(self, connector: str, seq: int) -> bool:
        return await self.store.run_write(_reopen, connector, seq)

    async def release(self, connector: str) -> int:
        return await self.store.run_write(_release, connector)

    async def counts(self, connector: str) -> tuple[int, float | None]:
        def work(conn: sqlite3.Connection) -> tuple[int, float | None]:
            return conn.execute("SELECT count(*), min(received) FROM hl7_inbox WHERE connector = ? AND "
                                "state = 'pending'", (connector,)).fetchone()
        count, oldest = await self.store.run_read(work)
        return count, oldest

    async def purge(self, connector: str, before: float) -> int:
        return await self.store.run_write(_purge, connector, before)
