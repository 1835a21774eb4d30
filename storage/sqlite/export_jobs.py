"""Bulk Data export jobs (storage/base.py ExportJobs) in one SQLite table beside the resources.

Every write runs on the store's writer (`run_write`) inside its transaction, so the limit check of `add` and the
claim of `claim` are atomic across the processes on one database. Reads (`get`) run on the readers.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS export_jobs (
        id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        state TEXT NOT NULL,
        lease_owner TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        expires REAL,
        doc TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS export_jobs_state ON export_jobs (state, created)",
)
_ACTIVE = "state IN ('accepted', 'in-progress')"


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def _columns(job: dict[str, Any]) -> tuple:
    return (job["state"], job.get("lease_owner"), job.get("lease_until") or 0, job.get("expires"),
            orjson.dumps(job).decode())


def _add(conn: sqlite3.Connection, job: dict[str, Any], limit: int) -> bool:
    if conn.execute(f"SELECT count(*) FROM export_jobs WHERE {_ACTIVE}").fetchone()[0] >= limit:
        return False
    conn.execute("INSERT INTO export_jobs (id, created, state, lease_owner, lease_until, expires, doc) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)", (job["id"], job["created"], *_columns(job)))
    return True


def _claim(conn: sqlite3.Connection, owner: str, lease_seconds: float, now: float) -> str | None:
    row = conn.execute(f"SELECT id, doc FROM export_jobs WHERE {_ACTIVE} AND lease_until <= ? ORDER BY created "
                       "LIMIT 1", (now,)).fetchone()
    if row is None:
        return None
    job = orjson.loads(row[1])
    job.update(state="in-progress", lease_owner=owner, lease_until=now + lease_seconds,
               attempts=job.get("attempts", 0) + 1)
    conn.execute("UPDATE export_jobs SET state = ?, lease_owner = ?, lease_until = ?, expires = ?, doc = ? "
                 "WHERE id = ?", (*_columns(job), row[0]))
    return orjson.dumps(job).decode()


def _save(conn: sqlite3.Connection, job: dict[str, Any], owner: str) -> bool:
    return conn.execute("UPDATE export_jobs SET state = ?, lease_owner = ?, lease_until = ?, expires = ?, doc = ? "
                        "WHERE id = ? AND lease_owner = ? AND state = 'in-progress'",
                        (*_columns(job), job["id"], owner)).rowcount == 1


def _release(conn: sqlite3.Connection, owner: str) -> int:
    released = 0
    for job_id, doc in conn.execute("SELECT id, doc FROM export_jobs WHERE lease_owner = ? AND state = 'in-progress'",
                                    (owner,)).fetchall():
        job = orjson.loads(doc)
        job.update(state="accepted", lease_owner=None, lease_until=0)
        conn.execute("UPDATE export_jobs SET state = ?, lease_owner = ?, lease_until = ?, expires = ?, doc = ? "
                     "WHERE id = ?", (*_columns(job), job_id))
        released += 1
    return released


def _remove(conn: sqlite3.Connection, job_id: str) -> bool:
    return conn.execute("DELETE FROM export_jobs WHERE id = ?", (job_id,)).rowcount == 1


class SqliteExportJobs:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def open(self) -> None:
        await self.store.run_write(_create)

    async def add(self, job: dict[str, Any], limit: int) -> bool:
        return await self.store.run_write(_add, job, limit)

    async def get(self, job_id: str) -> dict[str, Any] | None:
        def work(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT doc FROM export_jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else row[0]
        doc = await self.store.run_read(work)
        return None if doc is None else orjson.loads(doc)

    async def claim(self, owner: str, lease_seconds: float, now: float) -> dict[str, Any] | None:
        doc = await self.store.run_write(_claim, owner, lease_seconds, now)
        return None if doc is None else orjson.loads(doc)

    async def save(self, job: dict[str, Any], owner: str) -> bool:
        return await self.store.run_write(_save, job, owner)

    async def release(self, owner: str) -> int:
        return await self.store.run_write(_release, owner)

    async def owners(self) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("SELECT DISTINCT lease_owner FROM export_jobs WHERE "
                                                   "state = 'in-progress' AND lease_owner IS NOT NULL")]
        return await self.store.run_read(work)

    async def remove(self, job_id: str) -> bool:
        return await self.store.run_write(_remove, job_id)

    async def expired(self, now: float) -> list[str]:
        def work(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute("SELECT id FROM export_jobs WHERE expires IS NOT NULL AND "
                                                   "expires < ?", (now,))]
        return await self.store.run_read(work)
