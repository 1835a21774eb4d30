"""Leases (storage/base.py) in one SQLite table, `leases`.

The table is made with the schema (storage/sqlite/schema.py). Every change runs on the store's writer
(`run_write`) inside its transaction, with the writer's clock: all the processes on one SQLite file share one
machine, and so one clock. `check` runs inside another write's transaction (`Records.put(fence=…)`), so a fenced
write and a takeover cannot interleave.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from hearth.storage.base import Lease, LeaseLost

def _acquire(conn: sqlite3.Connection, name: str, owner: str, seconds: float) -> tuple | None:
    now = time.time()
    row = conn.execute("SELECT owner, token, until FROM leases WHERE name = ?", (name,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO leases VALUES (?, ?, 1, ?)", (name, owner, now + seconds))
        return name, owner, 1, now + seconds
    held_by, token, until = row
    if held_by == owner and until > now:
        conn.execute("UPDATE leases SET until = ? WHERE name = ?", (now + seconds, name))
        return name, owner, token, now + seconds
    if until > now:
        return None
    conn.execute("UPDATE leases SET owner = ?, token = ?, until = ? WHERE name = ?", (owner, token + 1, now + seconds,
                                                                                    name))
    return name, owner, token + 1, now + seconds


def _release(conn: sqlite3.Connection, name: str, owner: str, token: int) -> bool:
    return conn.execute("UPDATE leases SET until = 0 WHERE name = ? AND owner = ? AND token = ? AND until > ?",
                        (name, owner, token, time.time())).rowcount == 1


def check(conn: sqlite3.Connection, lease: Lease) -> None:
    """Raise LeaseLost unless `lease` is held now under its token (inside the caller's write transaction)."""
    row = conn.execute("SELECT owner, token, until FROM leases WHERE name = ?", (lease.name,)).fetchone()
    if row is None or row[0] != lease.owner or row[1] != lease.token or row[2] <= time.time():
        raise LeaseLost(lease)


class SqliteLeases:
    def __init__(self, store: Any) -> None:
        self.store = store  # a SqliteStore: run_read / run_write

    async def open(self) -> None:
        """Nothing to do: the table comes with the schema."""

    async def acquire(self, name: str, owner: str, seconds: float) -> Lease | None:
        found = await self.store.run_write(_acquire, name, owner, seconds)
        return None if found is None else Lease(*found)

    async def release(self, lease: Lease) -> bool:
        return await self.store.run_write(_release, lease.name, lease.owner, lease.token)

    async def holder(self, name: str) -> Lease | None:
        row = await self.store.run_read(lambda conn: conn.execute(
            "SELECT name, owner, token, until FROM leases WHERE name = ?", (name,)).fetchone())
        return None if row is None else Lease(*row)

    async def now(self) -> float:
        return time.time()
