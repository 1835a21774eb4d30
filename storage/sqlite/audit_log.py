"""The audit log (security/audit.py) in SQLite, append-only `audit_events` tables (storage/sqlite/schema.py):

- records of writes are inserted in the writes' own transaction, in the main database (store.commit);
- records of every other access are appended in batches to a database file of their own beside it
  (`hearth.audit.db` for `hearth.db`): auditing reads never waits for, nor holds up, the writer process that
  commits clinical writes.
A batch is appended on the calling (event loop) thread, as primary-key reads are (storage/sqlite/store.py): at
`synchronous=NORMAL` a WAL commit is a write() into the page cache, ~30 us, while a trip to a thread costs the loop
~100 us and a GIL hand-over per batch (bench/crud.py: audited reads at 16 connections went from 0.55 to ~0.8 of
unaudited ones). What may block runs on the log's own thread instead: checkpoints (they fsync), purges, reads,
a batch that finds the database busy, and every batch at `synchronous=FULL` (an fsync per commit).
Reading, searching, exporting and purging see both tables as one log."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Sequence

import orjson

from hearth.storage.base import AuditQuery, AuditRecord
from hearth.storage.sqlite.schema import AUDIT_SCHEMA
from hearth.storage.sqlite.writer_process import connect

_INSERT = ("INSERT INTO audit_events (id, recorded, agent, outcome, patients, entities, body) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_EXPORT_BATCH = 1000
_PURGE_BATCH = 5000  # rows per purge statement: appends that find the database busy wait for one chunk, not all
_CHECKPOINT_EVERY = 2000  # records appended between two checkpoints (then ~1000 pages of WAL or less)
Row = tuple[str, str, bytes]  # recorded, id, body


def audit_rows(records: Sequence[AuditRecord]) -> list[tuple]:
    return [(r.id, r.recorded, r.agent, r.outcome, orjson.dumps(r.patients).decode(),
             orjson.dumps(r.entities).decode(), r.body) for r in records]


def append_audit(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    """Inside an open transaction (the writes' own)."""
    if rows:
        conn.executemany(_INSERT, rows)


def audit_path(database: str) -> str:
    path = Path(database)
    return str(path.with_name(f"{path.stem}.audit{path.suffix or '.db'}"))


class SqliteAuditLog:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write on the main database
        self.path = audit_path(store.path)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="hearth-audit")
        self._conn: sqlite3.Connection | None = None  # the thread's
        self._inline: sqlite3.Connection | None = None  # the event loop's, for appends (not at synchronous=FULL)
        self._appended = 0  # records since the last checkpoint
        self._checkpoint: asyncio.Future | None = None

    async def _own(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(connection, *args)` on the audit database, on its thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: work(self._connection(), *args))

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.path, self.store.synchronous)
            for statement in AUDIT_SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _main(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(connection, *args)` on the main database, on a reader thread."""
        return await self.store.run_read(lambda conn: work(conn, *args))

    async def open(self) -> None:
        await self._own(lambda conn: None)  # the schema, made on the thread
        if self.store.synchronous.upper() not in ("FULL", "EXTRA", "2", "3"):
            self._inline = connect(self.path, self.store.synchronous)
            self._inline.execute("PRAGMA busy_timeout=0")  # busy: hand the batch to the thread, never wait here

    async def close(self) -> None:
        def finish(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = None
        if self._checkpoint is not None:
            await self._checkpoint
        if self._inline is not None:
            self._inline.close()
            self._inline = None
        if self._conn is not None:
            await self._own(finish)
        self._thread.shutdown(wait=True)

    async def append(self, records: Sequence[AuditRecord]) -> None:
        rows = audit_rows(records)
        try:
            if self._inline is None:
                raise sqlite3.OperationalError("appends run on the thread")
            _committed(self._inline, rows)
        except sqlite3.OperationalError:  # busy (a purge, another process) or FULL: the thread waits its turn
            await self._own(_committed, rows)
        self._appended += len(rows)
        if self._appended >= _CHECKPOINT_EVERY and self._checkpoint is None:
            self._appended = 0
            self._checkpoint = asyncio.ensure_future(self._own(_checkpointed))
            self._checkpoint.add_done_callback(self._checkpointed)

    def _checkpointed(self, done: asyncio.Future) -> None:
        self._checkpoint = None
        if not done.cancelled() and done.exception() is not None:
            logging.getLogger("hearth.audit").warning("audit log checkpoint failed: %s", done.exception())

    async def purge(self, before: str) -> int:
        """Remove the records made before `before` (the retention setting's); how many."""
        removed = await self.store.run_write(_purge, before)
        while chunk := await self._own(_purge_some, before):
            removed += chunk
        return removed

    async def read(self, record_id: str) -> bytes | None:
        for reading in (self._own, self._main):
            row = await reading(_read, record_id)
            if row is not None:
                return bytes(row[0])
        return None

    async def search(self, query: AuditQuery) -> list[Row]:
        """(recorded, id, body) of the matching records, newest first."""
        sql, args = _search_sql(query)
        found = [*await self._own(_rows, sql, args), *await self._main(_rows, sql, args)]
        found.sort(key=lambda row: (row[0], row[1]), reverse=True)
        return found[:query.count]

    async def export(self, since: str | None = None) -> AsyncIterator[bytes]:
        """Every record (made at or after `since`), oldest first, read in batches from both databases."""
        sources = [self._batches(self._own, since), self._batches(self._main, since)]
        heads: list[Row | None] = [await anext(source, None) for source in sources]
        while any(head is not None for head in heads):
            index = min((i for i, head in enumerate(heads) if head is not None),
                        key=lambda i: heads[i][:2])  # type: ignore[index]
            yield heads[index][2]  # type: ignore[index]
            heads[index] = await anext(sources[index], None)

    @staticmethod
    async def _batches(reading: Callable[..., Any], since: str | None) -> AsyncIterator[Row]:
        after = (since or "", "")
        while True:
            rows = await reading(_rows, "SELECT recorded, id, body FROM audit_events WHERE (recorded > ? OR "
                                 "(recorded = ? AND id > ?)) ORDER BY recorded, id LIMIT ?",
                                 (after[0], *after, _EXPORT_BATCH))
            for row in rows:
                yield row
            if len(rows) < _EXPORT_BATCH:
                return
            after = rows[-1][:2]


def _committed(conn: sqlite3.Connection, rows: Sequence[tuple]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(_INSERT, rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _checkpointed(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database file; PASSIVE: appends go on meanwhile."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _purge(conn: sqlite3.Connection, before: str) -> int:
    """In the writer's transaction."""
    return conn.execute("DELETE FROM audit_events WHERE recorded < ?", (before,)).rowcount


def _purge_some(conn: sqlite3.Connection, before: str) -> int:
    """One chunk, committed on its own (the audit database's connection commits each statement)."""
    return conn.execute("DELETE FROM audit_events WHERE rowid IN (SELECT rowid FROM audit_events WHERE "
                        "recorded < ? LIMIT ?)", (before, _PURGE_BATCH)).rowcount


def _read(conn: sqlite3.Connection, record_id: str) -> Any:
    return conn.execute("SELECT body FROM audit_events WHERE id = ?", (record_id,)).fetchone()


def _rows(conn: sqlite3.Connection, sql: str, args: tuple) -> list[Row]:
    return [(row[0], row[1], bytes(row[2])) for row in conn.execute(sql, args).fetchall()]


def _search_sql(query: AuditQuery) -> tuple[str, tuple]:
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
    return (f"SELECT recorded, id, body FROM audit_events {where} ORDER BY recorded DESC, id DESC LIMIT ?",
            (*args, query.count))


def _like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
