"""The SQLite backend: WAL, one writer thread committing queued writes in groups, a pool of reader threads."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Callable, Sequence

from search.entries import Entry
from search.ir import Query
from storage import clock
from storage.base import (Assertion, AssertionFailed, Change, HistoryPage, SearchPage, Version, VersionConflict,
                          Write)
from storage.sqlite import index, schema

log = logging.getLogger("hearth.storage.sqlite")

_GROUP_LIMIT = 256  # writes committed together at most


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA mmap_size=268435456")
    # checkpoint every ~40 MB of WAL instead of the default ~4 MB: hot index pages rewritten by many commits are
    # copied back (and fsynced) once per checkpoint, not ten times; the group-commit writer sustains ~1.5x the
    # creates/s (Synthea Observations, 16 per commit). Cost: a longer WAL to replay after a crash.
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    return conn


class _Writer(threading.Thread):
    """Runs write jobs on one connection; jobs queued meanwhile commit together (group commit).

    Each job runs inside its own savepoint, so one failing job (a version conflict) leaves the others
    of its group intact.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(name="hearth-sqlite-writer", daemon=True)
        self.conn = conn
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, job: Callable[[sqlite3.Connection], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.jobs.put((job, future, loop))
        return future

    def stop(self) -> None:
        self.jobs.put(None)
        self.join()

    def run(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            group = [first]
            while len(group) < _GROUP_LIMIT:
                try:
                    item = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self.jobs.put(None)
                    break
                group.append(item)
            self._run_group(group)

    def _run_group(self, group: list) -> None:
        conn = self.conn
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job, _, _ in group:
                conn.execute("SAVEPOINT job")
                try:
                    result = job(conn)
                except BaseException as exc:  # handed to the waiting caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, exc))
                else:
                    conn.execute("RELEASE job")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
        except BaseException as exc:  # the commit itself failed: nothing of the group is kept
            log.exception("sqlite group commit failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(None, exc)] * len(group)
        for (_, future, loop), (result, error) in zip(group, outcomes):
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _version(row: tuple) -> Version:
    type_, id_, version_id, last_updated, deleted, body = row
    return Version(type_, id_, version_id, clock.from_text(last_updated), bool(deleted), bytes(body))


_VERSION_COLUMNS = "h.type, h.id, h.version_id, h.last_updated, h.deleted, h.body"


class SqliteStore:
    """Store on one SQLite file (see storage/base.py for the contract)."""

    name = "sqlite"
    supports_transactions = True

    def __init__(self, path: str, synchronous: str = "NORMAL", readers: int = 4) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.path = path
        self.synchronous = synchronous
        conn = connect(path, synchronous)
        for statement in (*schema.SCHEMA, *index.SCHEMA):
            conn.execute(statement)
        self._writer = _Writer(conn)
        self._writer.start()
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="hearth-sqlite-reader")

    # -- reading ---------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.synchronous)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            self._reader_conns.append(conn)
        return conn

    async def run_read(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `work(connection)` on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: work(self._reader()))

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
                      before_seq: int | None, count: int, at: datetime | None = None) -> HistoryPage:
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
            total = conn.execute(f"SELECT count(*) FROM changes c WHERE {where}", args).fetchone()[0]
            return HistoryPage([(row[0], _version(row[1:])) for row in rows], total)
        return await self.run_read(work)

    async def changes(self, after_seq: int, limit: int) -> list[Change]:
        def work(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute("SELECT seq, type, id, version_id, interaction, last_updated FROM changes "
                                "WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()
            return [Change(s, t, i, v, n, clock.from_text(u)) for s, t, i, v, n, u in rows]
        return await self.run_read(work)

    async def search(self, query: Query) -> SearchPage:
        from storage.sqlite import search  # the IR compiler; imported late to keep start-up light
        return await self.run_read(lambda conn: search.execute(conn, query))

    # -- writing ---------------------------------------------------------------------------------

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = ()) -> list[Change]:
        return await self._writer.submit(lambda conn: _apply(conn, writes, assertions))

    async def reindex(self, items: Sequence[tuple[str, str, Sequence[Entry]]]) -> None:
        def work(conn: sqlite3.Connection) -> None:
            for resource_type, resource_id, entries in items:
                row = conn.execute("SELECT rid FROM resources WHERE type = ? AND id = ? AND NOT deleted",
                                   (resource_type, resource_id)).fetchone()
                if row:
                    index.replace_entries(conn, row[0], entries, existed=True)
        await self._writer.submit(work)

    async def run_write(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `work(connection)` on the writer thread inside a transaction (its own savepoint)."""
        return await self._writer.submit(work)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._writer.stop)
        self._readers.shutdown(wait=True)
        for conn in self._reader_conns:
            conn.close()
        self._writer.conn.close()


def _apply(conn: sqlite3.Connection, writes: Sequence[Write], assertions: Sequence[Assertion]) -> list[Change]:
    """Apply one commit inside the writer's open transaction (its savepoint undoes it on error)."""
    for assertion in assertions:
        from storage.sqlite import search
        ids = search.match_ids(conn, assertion.query)
        if ids != assertion.ids:
            raise AssertionFailed(assertion, ids)
    changes = []
    for write in writes:
        row = conn.execute("SELECT rid, version_id FROM resources WHERE type = ? AND id = ?",
                           (write.type, write.id)).fetchone()
        current = row[1] if row else 0
        if current != write.previous:
            raise VersionConflict(write.type, write.id, write.previous, current)
        updated = clock.to_text(write.last_updated)
        deleted = write.body is None
        if row:
            rid = row[0]
            conn.execute("UPDATE resources SET version_id = ?, last_updated = ?, deleted = ? WHERE rid = ?",
                         (write.version_id, updated, deleted, rid))
        else:
            rid = conn.execute("INSERT INTO resources (type, id, version_id, last_updated, deleted) "
                               "VALUES (?, ?, ?, ?, ?)",
                               (write.type, write.id, write.version_id, updated, deleted)).lastrowid
        seq = conn.execute("INSERT INTO changes (type, id, version_id, interaction, last_updated) "
                           "VALUES (?, ?, ?, ?, ?)",
                           (write.type, write.id, write.version_id, write.interaction, updated)).lastrowid
        conn.execute("INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (write.type, write.id, write.version_id, seq, updated, deleted, write.body or b""))
        index.replace_entries(conn, rid, () if deleted else write.entries, existed=row is not None)
        changes.append(Change(seq, write.type, write.id, write.version_id, write.interaction, write.last_updated))
    return changes
