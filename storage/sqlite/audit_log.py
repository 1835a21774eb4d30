"""The audit log (security/audit.py) in SQLite: the append-only `audit_events` table (storage/sqlite/schema.py).

Records of writes are inserted in the writes' own transaction (store.commit); records of reads are appended in
batches through the writer (`append`), one transaction per batch. Searches read on the reader threads."""

from __future__ import annotations

import sqlite3
from typing import Any, Sequence

import orjson

from hearth.storage.base import AuditQuery, AuditRecord

_INSERT = ("INSERT INTO audit_events (id, recorded, agent, outcome, patients, entities, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")


def audit_rows(records: Sequence[AuditRecord]) -> list[tuple]:
    return [(r.id, r.recorded, r.agent, r.outcome, orjson.dumps(r.patients).decode(),
             orjson.dumps(r.entities).decode(), r.body) for r in records]


def append_audit(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    if rows:
        conn.executemany(_INSERT, rows)


def _purge(conn: sqlite3.Connection, before: str) -> int:
    return conn.execute("DELETE FROM audit_events WHERE recorded < ?", (before,)).rowcount


class SqliteAuditLog:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def append(self, records: Sequence[AuditRecord]) -> None:
        await self.store.run_write(append_audit, audit_rows(records))

    async def purge(self, before: str) -> int:
        """Remove the records made before `before` (the retention setting's); how many."""
        return await self.store.run_write(_purge, before)

    async def read(self, record_id: str) -> bytes | None:
        def work(conn: sqlite3.Connection) -> Any:
            return conn.execute("SELECT body FROM audit_events WHERE id = ?", (record_id,)).fetchone()
        row = await self.store.run_read(work)
        return bytes(row[0]) if row else None

    async def search(self, query: AuditQuery) -> list[tuple[str, str, bytes]]:
        """(recorded, id, body) of the matching records, newest first."""
        conditions, args = [], []
        for column, operator, value in (("recorded", ">=", query.since), ("recorded", "<=", query.until),
                                        ("outcome", "=", query.outcome)):
            if value is not None:
                conditions.append(f"{column} {operator} ?")
                args.append(value)
        if query.agent is not None:
            conditions.append("(agent = ? OR agent LIKE ? ESCAPE '\\' OR agent LIKE ? ESCAPE '\\')")
            args += [query.agent, f"{_like(query.agent)} %", f"% {_like(query.agent)}"]
        if query.before is not None:
            conditions.append("(recorded < ? OR (recorded = ? AND id < ?))")
            args += [query.before[0], *query.before]
        for column, value in (("patients", query.patient), ("entities", query.entity)):
            if value is not None:
                conditions.append(f"EXISTS (SELECT 1 FROM json_each({column}) WHERE value = ?)")
                args.append(value)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT recorded, id, body FROM audit_events {where} ORDER BY recorded DESC, id DESC LIMIT ?"

        def work(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(sql, (*args, query.count)).fetchall()
        return [(row[0], row[1], bytes(row[2])) for row in await self.store.run_read(work)]

    async def export(self, since: str | None = None, batch: int = 1000):
        """Every record (made at or after `since`), oldest first, in batches read one at a time."""
        after = 0
        while True:
            def work(conn: sqlite3.Connection, after: int = after) -> list[Any]:
                return conn.execute("SELECT seq, body FROM audit_events WHERE seq > ? AND recorded >= ? "
                                    "ORDER BY seq LIMIT ?", (after, since or "", batch)).fetchall()
            rows = await self.store.run_read(work)
            for _, body in rows:
                yield bytes(body)
            if len(rows) < batch:
                return
            after = rows[-1][0]


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
