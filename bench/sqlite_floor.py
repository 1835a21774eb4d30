"""The create floor: raw SQLite inserts of the same bodies, on a connection with the store's own pragmas."""

from __future__ import annotations

import itertools
import time
import uuid
from pathlib import Path

from hearth.storage.sqlite.store import connect


def insert_rate(path: Path, bodies: list[bytes], seconds: float, group: int, synchronous: str = "NORMAL") -> float:
    """Rows per second inserting `bodies` under fresh uuid keys, `group` rows per transaction.

    group=1 is a commit per row, what one client at a time can ever get; a larger group is what the store's
    group commit can reach when that many writes are queued together.
    """
    conn = connect(str(path), synchronous)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS floor (id TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID")
        source = itertools.cycle(bodies)
        rows = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            for _ in range(group):
                conn.execute("INSERT INTO floor VALUES (?, ?)", (str(uuid.uuid4()), next(source)))
            conn.execute("COMMIT")
            rows += group
        return rows / (time.perf_counter() - start)
    finally:
        conn.close()
