"""The SQLite backend: WAL, a writer process committing queued writes in groups (storage/sqlite/writer.py), a pool
of reader threads whose searches are stopped at a deadline (storage/sqlite/readers.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from datetime import datetime
from typing import Any, Callable, Sequence

from hearth.search.entries import Entry
from hearth.search.ir import Query
from hearth.storage import clock
from hearth.storage.base import (Assertion, AssertionFailed, AuditRecord, Change, HistoryPage, SearchPage, Version, VersionConflict,
                          Write)
from hearth.storage.sqlite import expunge, index, schema
from hearth.storage.sqlite.audit_log import append_audit, audit_rows
from hearth.storage.sqlite.readers import Readers
from hearth.storage.sqlite.writer import Writer
from hearth.storage.sqlite.writer_process import connect

log = logging.getLogger("hearth.storage.sqlite")

def _version(row: tuple) -> Version:
    type_, id_, version_id, last_updated, deleted, body = row
    return Version(type_, id_, version_id, clock.from_text(last_updated), bool(deleted), bytes(body))


def prepare(path: str, synchronous: str) -> bytes:
    """Make (or migrate) the schema of the database at `path`; its paging-cursor MAC key."""
    if path == ":memory:":
        raise ValueError("SQLite storage needs a file: the writer process and the readers share it")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = connect(path, synchronous)
    try:
        for statement in (*schema.SCHEMA, *index.SCHEMA):
            conn.execute(statement)
        started = time.monotonic()
        if index.migrate(conn):
            log.info("sqlite index tables migrated: rows now carry resource types (%.1f s)", time.monotonic() - started)
        return bytes(conn.execute("SELECT value FROM secrets WHERE name = 'cursor'").fetchone()[0])
    finally:
        conn.close()


_VERSION_COLUMNS = "h.type, h.id, h.version_id, h.last_updated, h.deleted, h.body"
_GRACE = 5.0  # seconds a reader task may run past the deadline before the pool is reported stuck
_CLOSE_WAIT = 2.0  # seconds close() waits for the reader threads to end


class SqliteStore:
    """Store on one SQLite file (see storage/base.py for the contract)."""

    name = "sqlite"
    supports_transactions = True

    def __init__(self, path: str, synchronous: str = "NORMAL", readers: int = 4, search_timeout: float = 10.0,
                 writer: str = "") -> None:
        """`search_timeout`: seconds a read (search, history) may run before SQLite is told to stop it (0: none);
        `writer`: the Unix socket of the shared writer process of a `hearth serve --workers N` group (empty: this
        store starts a writer process of its own)."""
        self.path = path
        self.synchronous = synchronous
        self.search_timeout = search_timeout
        self._cursor_key = prepare(path, synchronous)
        self._writer = Writer(path, synchronous, writer)
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []  # the inline readers' (read, vread)
        self._readers = Readers(self._connect_reader, readers, search_timeout)

    # -- reading ---------------------------------------------------------------------------------

    def _connect_reader(self) -> sqlite3.Connection:
        conn = connect(self.path, self.synchronous)
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _reader(self) -> sqlite3.Connection:
        """The calling thread's own connection, for the inline primary-key reads."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect_reader()
            self._reader_conns.append(conn)
        return conn

    async def run_read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `work(connection)` on a reader thread, stopped past the search deadline (SearchTimedOut)."""
        return await self._readers.run(work)

    async def cursor_key(self) -> bytes:
        """The database's paging-cursor MAC key (made with the schema, read when the store opens)."""
        return self._cursor_key

    def readiness_problem(self) -> str | None:
        """Why this store cannot serve searches now (a reader thread stuck past the deadline), or None."""
        return self._readers.stuck(_GRACE)

    # read and vread are primary-key lookups: ~10-20 us from the page cache, much less than a trip through the
    # reader pool (executor submit, future chaining, loop wake-up, GIL hand-over: ~100 us of the loop's CPU and
    # more in latency; with bench/crud.py, ~1.5x the reads/s at 16 connections inline). So they run on the
    # calling thread's own connection; scans (search, history) stay on the reader threads.
    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        row = self._reader().execute(
            f"SELECT {_VERSION_COLUMNS} FROM resources r JOIN history h "
            "ON h.type = r.type AND h.id = r.id AND h.version_id = r.version_id "
            "WHERE r.type = ? AND r.id = ?", (resource_type, resource_id)).fetchone()
        return _version(row) if row else None

    async def vread(self, resource_type: str, resource_id: str, version_id: int) -> Version | None:
        row = self._reader().execute(
            f"SELECT {_VERSION_COLUMNS} FROM history h WHERE type = ? AND id = ? AND version_id = ?",
            (resource_type, resource_id, version_id)).fetchone()
        return _version(row) if row else None

    async def history(self, resource_type: str | None, resource_id: str | None, since: datetime | None,
                      before_seq: int | None, count: int, at: datetime | None = None, *,
                      total: bool = False) -> HistoryPage:
        conditions, args = [], []
        if resource_type is not None:
            conditions.append("c.type = ?")
            args.append(resource_type)
        if resource_id is not None:
            conditions.append("c.id = ?")
            args.append(resource_id)
        if since is not None:
            conditions.append("c.last_updated >= ?")
            args.append(clock.to_text(since))
        if at is not None:
            conditions.append("c.last_updated <= ?")
            args.append(clock.to_text(at))
        where = " AND ".join(conditions) or "1"
        page_where = where + (" AND c.seq < ?" if before_seq is not None else "")
        page_args = [*args, before_seq] if before_seq is not None else args

        def work(conn: sqlite3.Connection) -> HistoryPage:
            rows = conn.execute(
                f"SELECT c.seq, {_VERSION_COLUMNS} FROM changes c JOIN history h "
                "ON h.type = c.type AND h.id = c.id AND h.version_id = c.version_id "
                f"WHERE {page_where} ORDER BY c.seq DESC LIMIT ?", (*page_args, count)).fetchall()
            counted = conn.execute(f"SELECT count(*) FROM changes c WHERE {where}", args).fetchone()[0] \
                if total else None
            return HistoryPage([(row[0], _version(row[1:])) for row in rows], counted)
        return await self.run_read(work)

    async def changes(self, after_seq: int, limit: int) -> list[Change]:
        def work(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute("SELECT seq, type, id, version_id, interaction, last_updated FROM changes "
                                "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
            return [Change(s, t, i, v, n, clock.from_text(u)) for s, t, i, v, n, u in rows]
        return await self.run_read(work)

    async def last_seq(self) -> int:
        return await self.run_read(lambda conn: conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])

    async def search(self, query: Query) -> SearchPage:
        from hearth.storage.sqlite import search  # the IR compiler; imported late to keep start-up light
        return await self.run_read(lambda conn: search.execute(conn, query))

    # -- writing ---------------------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = (),
                     audit: Sequence[AuditRecord] = ()) -> list[Change]:
        rows = [(w.type, w.id, w.version_id, clock.to_text(w.last_updated), w.body,
                 None if w.body is None else index.entry_rows(w.entries), w.previous, w.interaction) for w in writes]
        seqs = await self._writer.submit(_apply, rows, assertions, self.search_timeout, audit_rows(audit))
        return [Change(seq, w.type, w.id, w.version_id, w.interaction, w.last_updated) for seq, w in zip(seqs, writes)]

    async def reindex(self, items: Sequence[tuple[str, str, int, Sequence[Entry]]]) -> None:
        await self._writer.submit(_reindex, [(t, i, v, index.entry_rows(entries)) for t, i, v, entries in items])

    async def rewrite(self, write: Write) -> None:
        await self._writer.submit(_rewrite, write.type, write.id, write.version_id, write.body,
                                  index.entry_rows(write.entries))

    async def expunge(self, resource_type: str | None, resource_id: str | None, *, deleted: bool, previous: bool,
                      limit: int) -> int:
        return await self._writer.submit(expunge.expunge, resource_type, resource_id, deleted, previous, limit)

    async def expunge_everything(self) -> int:
        return await self._writer.submit(expunge.expunge_everything)

    async def run_write(self, work: Callable[..., Any], *args: Any) -> Any:
        """Run `work(connection, *args)` in the writer process inside a transaction (its own savepoint);
        `work` must be a module-level function (it is pickled by name)."""
        return await self._writer.submit(work, *args)

    async def close(self) -> None:
        """Stop the readers (interrupting what they run; a thread that does not end is left behind, it cannot hold
        up the process's exit) and the writer process, after its queued writes."""
        await asyncio.to_thread(self._readers.close, _CLOSE_WAIT)
        await self._writer.stop()
        for conn in self._reader_conns:
            conn.close()


def _reindex(conn: sqlite3.Connection, items: Sequence[tuple[str, str, int, index.Rows]]) -> None:
    for resource_type, resource_id, version_id, rows in items:
        row = conn.execute("SELECT rid FROM resources WHERE type = ? AND id = ? AND version_id = ? AND NOT deleted",
                           (resource_type, resource_id, version_id)).fetchone()
        if row:
            index.replace_entries(conn, row[0], resource_type, rows, existed=True)


def _rewrite(conn: sqlite3.Connection, type_: str, id_: str, version_id: int, body: bytes, rows: index.Rows) -> None:
    """`Store.rewrite`: a version's body (kept in `history`) replaced, and the current version's index rows."""
    row = conn.execute("SELECT rid, version_id, deleted FROM resources WHERE type = ? AND id = ?",
                       (type_, id_)).fetchone()
    current = row is not None and row[1] == version_id and not row[2]
    earlier = row is not None and version_id < row[1]
    if not (current or earlier) or conn.execute(
            "UPDATE history SET body = ? WHERE type = ? AND id = ? AND version_id = ? AND deleted = 0",
            (body, type_, id_, version_id)).rowcount != 1:
        raise VersionConflict(type_, id_, version_id, row[1] if row else 0)
    if current:
        index.replace_entries(conn, row[0], type_, rows, existed=True)


# a Write as `commit` hands it to the writer process: type, id, version_id, last_updated (text), body (None: a
# tombstone), index rows, previous version_id, interaction
_WriteRow = tuple[str, str, int, str, "bytes | None", "index.Rows | None", int, str]


def _apply(conn: sqlite3.Connection, writes: Sequence[_WriteRow], assertions: Sequence[Assertion],
           timeout: float, audit: Sequence[tuple] = ()) -> list[int]:
    """Apply one commit inside the writer's open transaction (its savepoint undoes it on error); the
    change-log sequence number of each write. An assertion's search may take `timeout` seconds (SearchTimedOut):
    every write waits on the writer."""
    for assertion in assertions:
        from hearth.storage.sqlite import search
        ids = search.match_ids(conn, assertion.query, timeout)
        if ids != assertion.ids:
            raise AssertionFailed(assertion, ids)
    seqs = []
    for type_, id_, version_id, updated, body, rows, previous, interaction in writes:
        row = conn.execute("SELECT rid, version_id FROM resources WHERE type = ? AND id = ?", (type_, id_)).fetchone()
        current = row[1] if row else 0
        if current != previous:
            raise VersionConflict(type_, id_, previous, current)
        deleted = body is None
        if row:
            rid = row[0]
            conn.execute("UPDATE resources SET version_id = ?, last_updated = ?, deleted = ? WHERE rid = ?",
                         (version_id, updated, deleted, rid))
        else:
            rid = conn.execute("INSERT INTO resources (type, id, version_id, last_updated, deleted) "
                               "VALUES (?, ?, ?, ?, ?)", (type_, id_, version_id, updated, deleted)).lastrowid
        seq = conn.execute("INSERT INTO changes (type, id, version_id, interaction, last_updated) "
                           "VALUES (?, ?, ?, ?, ?)", (type_, id_, version_id, interaction, updated)).lastrowid
        conn.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (type_, id_, version_id, seq, updated, deleted, body or b""))
        index.replace_entries(conn, rid, type_, rows or {}, existed=row is not None)
        seqs.append(seq)
    append_audit(conn, audit)
    return seqs
