"""The SQLite writer process: the one connection that writes, committing the jobs it is sent in groups.

Why a process: a create spends about as long in SQLite as in the server's own Python (parsing, validation,
index extraction). In a thread of the server the two share one interpreter lock and, in practice, one core; in a
process of its own the writer runs on the second core. The server's side is storage/sqlite/writer.py.

A job is a module-level function and its arguments, `fn(connection, *args)`, pickled (so the function travels by
name); each runs inside its own savepoint, so one failing job (a version conflict) leaves the others of its group
intact. Jobs that arrive while a group is being written go together into the next one (group commit).
"""

from __future__ import annotations

import logging
import pickle
import signal
import sqlite3
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

log = logging.getLogger("hearth.storage.sqlite")

_GROUP_LIMIT = 256  # jobs committed together at most
# After a group of several jobs (clients are writing concurrently), a group smaller than _LINGER_BELOW waits up
# to _LINGER seconds for each further job: a commit's cost is mostly per group (every page it dirtied goes to the
# WAL once per commit), so a few bigger groups beat many small ones. A lone writer never waits.
_LINGER_BELOW = 8
_LINGER = 0.0005
# The checkpointer thread copies the WAL back into the database off the commit path; once the WAL holds this
# many frames the writer checkpoints the (short) rest itself, between groups, so that the next transaction
# starts the WAL over instead of growing it without end.
_CHECKPOINT_FRAMES = 20_000  # ~80 MB
_CHECKPOINT_PAUSE = 0.2  # seconds between background checkpoints

Job = tuple[Callable[..., Any], tuple]


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache per connection
    conn.execute("PRAGMA temp_store=MEMORY")
    # reads of mapped pages skip a read() call and a copy each: at 1M resources (7 GB) a search's random lookups
    # miss the page cache, and mapping 2 GB (what SQLite's default build allows) took ~30% off a count
    conn.execute("PRAGMA mmap_size=2147418112")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # the writer process's checkpointer does it (_serve)
    conn.execute("PRAGMA journal_size_limit=67108864")  # a WAL that grew under load shrinks back to 64 MB on reset
    return conn


def run_group(conn: sqlite3.Connection, jobs: list[Job]) -> list[tuple[Any, BaseException | None]]:
    """Run `jobs` in one transaction, each in its own savepoint: (result, error) per job."""
    outcomes: list[tuple[Any, BaseException | None]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for fn, args in jobs:
            conn.execute("SAVEPOINT job")
            try:
                result = fn(conn, *args)
            except Exception as exc:  # handed to the waiting caller
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((None, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((result, None))
        conn.execute("COMMIT")
    except Exception as exc:  # the commit itself failed: nothing of the group is kept
        log.exception("sqlite group commit failed")
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        outcomes = [(None, exc)] * len(jobs)
    return outcomes


def _serve(pipe: Connection, path: str, synchronous: str) -> None:
    """The writer process: lists of (number, pickled job) in, (number, result, error) out, until a list holds None
    or the pipe closes.

    Whatever arrived while a group was being written makes the next group.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server shuts the writer down after its last write
    conn = connect(path, synchronous)
    checkpointer = _Checkpointer(path, synchronous)
    linger = 0.0
    try:
        while True:
            numbered = pickle.loads(pipe.recv_bytes())
            while len(numbered) < _GROUP_LIMIT and pipe.poll(linger if len(numbered) < _LINGER_BELOW else 0):
                numbered += pickle.loads(pipe.recv_bytes())
            linger = _LINGER if len(numbered) > 1 else 0
            last = None in numbered
            if last:
                numbered.remove(None)
            if numbered:
                _answer(pipe, conn, numbered)
            if last:
                return
            if checkpointer.frames >= _CHECKPOINT_FRAMES:
                checkpointer.frames = 0
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            checkpointer.wake.set()
    except EOFError:  # the server is gone
        return
    finally:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        conn.close()


class _Checkpointer(threading.Thread):
    """Copies the WAL back into the database on a connection of its own, at most every _CHECKPOINT_PAUSE."""

    def __init__(self, path: str, synchronous: str) -> None:
        super().__init__(name="hearth-sqlite-checkpointer", daemon=True)
        self.conn = connect(path, synchronous)
        self.wake = threading.Event()  # set by the writer after each group
        self.frames = 0  # frames in the WAL at the last checkpoint
        self.start()

    def run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            # PASSIVE: copies what no reader still needs, never waits for the writer or readers
            _, self.frames, _ = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            time.sleep(_CHECKPOINT_PAUSE)


def _answer(pipe: Connection, conn: sqlite3.Connection, numbered: list[tuple[int, bytes]]) -> None:
    """Run the jobs (each pickled on its own, so that one that does not unpickle fails alone) and send back their
    outcomes."""
    jobs, outcomes = [], {}
    for number, pickled in numbered:
        try:
            jobs.append((number, pickle.loads(pickled)))
        except Exception as exc:
            outcomes[number] = (None, exc)
    for (number, _), outcome in zip(jobs, run_group(conn, [job for _, job in jobs])):
        outcomes[number] = outcome
    pipe.send_bytes(_dumps([(number, *outcomes[number]) for number, _ in numbered]))


def _dumps(outcomes: list[tuple[int, Any, BaseException | None]]) -> bytes:
    try:
        return pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an error that does not pickle still reaches its caller, as text
        return pickle.dumps([(number, result, None if error is None else RuntimeError(repr(error)))
                             for number, result, error in outcomes], protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":  # started by storage/sqlite/writer.py: python -m hearth.storage.sqlite.writer_process FD PATH SYNC
    _serve(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[3])
