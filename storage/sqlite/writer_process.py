"""The SQLite writer process: the one connection that writes, committing the jobs it is sent in groups.

Why a process: a create spends about as long in SQLite as in the server's own Python (parsing, validation,
index extraction). In a thread of the server the two share one interpreter lock and, in practice, one core; in a
process of its own the writer runs on the second core. The server's side is storage/sqlite/writer.py.

A job is a module-level function and its arguments, `fn(connection, *args)`, pickled (so the function travels by
name); each runs inside its own savepoint, so one failing job (a version conflict) leaves the others of its group
intact. Jobs that arrive while a group is being written go together into the next one (group commit).

With `hearth serve --workers N` one writer process serves every server process of the group: the supervisor
(server/workers.py) starts it with a listening Unix socket, each server process connects to it, and their jobs
share groups like those of one process.
"""

from __future__ import annotations

import logging
import pickle
import signal
import socket
import sqlite3
import sys
import threading
import time
from multiprocessing.connection import Connection, wait
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


def _serve(control: Connection, path: str, synchronous: str, listener: socket.socket | None = None) -> None:
    """The writer process: lists of (number, pickled job) in, (number, result, error) out, on `control` and on
    every connection `listener` accepts (the server processes of `hearth serve --workers N`), until `control`
    sends a list holding None or closes. Another connection's None or end closes only that connection.

    Whatever arrived, on any connection, while a group was being written makes the next group.
    """
    for stop in (signal.SIGINT, signal.SIGTERM):  # the server (or supervisor) ends the writer after its last write
        signal.signal(stop, signal.SIG_IGN)
    conn = connect(path, synchronous)
    checkpointer = _Checkpointer(path, synchronous)
    waitables: list[Any] = [control] if listener is None else [control, listener]
    linger = 0.0
    try:
        while True:
            group: list[tuple[Connection, int, bytes]] = []
            done: set[Connection] = set()  # connections whose last list arrived (None) or that ended
            timeout: float | None = None  # the first wait blocks until something arrives
            while len(group) < _GROUP_LIMIT:
                ready = wait(waitables, timeout)
                if not ready:
                    break
                for source in ready:
                    if source is listener:
                        waitables.append(Connection(listener.accept()[0].detach()))
                    elif source not in done:
                        _receive(source, group, done)
                if done:  # answered and closed before anything more is read
                    break
                if group:
                    timeout = linger if len(group) < _LINGER_BELOW else 0
            linger = _LINGER if len(group) > 1 else 0
            if group:
                _answer(conn, group, done)
            if control in done:
                return
            for client in done:
                waitables.remove(client)
                client.close()
            if checkpointer.frames >= _CHECKPOINT_FRAMES:
                checkpointer.frames = 0
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            checkpointer.wake.set()
    finally:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        conn.close()


def _receive(source: Connection, group: list[tuple[Connection, int, bytes]], done: set[Connection]) -> None:
    """One list from `source` into `group`; `source` into `done` when it said None or ended."""
    try:
        numbered = pickle.loads(source.recv_bytes())
    except (EOFError, OSError):  # its process is gone
        done.add(source)
        return
    for item in numbered:
        if item is None:
            done.add(source)
        else:
            group.append((source, *item))


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


def _answer(conn: sqlite3.Connection, group: list[tuple[Connection, int, bytes]], done: set[Connection]) -> None:
    """Run the jobs (each pickled on its own, so that one that does not unpickle fails alone) and send each
    connection its jobs' outcomes (one whose process is gone is marked done)."""
    jobs, outcomes = [], {}
    for index, (_, _, pickled) in enumerate(group):
        try:
            jobs.append((index, pickle.loads(pickled)))
        except Exception as exc:
            outcomes[index] = (None, exc)
    for (index, _), outcome in zip(jobs, run_group(conn, [job for _, job in jobs])):
        outcomes[index] = outcome
    replies: dict[Connection, list[tuple[int, Any, BaseException | None]]] = {}
    for index, (source, number, _) in enumerate(group):
        replies.setdefault(source, []).append((number, *outcomes[index]))
    for source, reply in replies.items():
        try:
            source.send_bytes(_dumps(reply))
        except OSError:  # its process is gone; what it sent is committed all the same
            done.add(source)


def _dumps(outcomes: list[tuple[int, Any, BaseException | None]]) -> bytes:
    try:
        return pickle.dumps(outcomes, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an error that does not pickle still reaches its caller, as text
        return pickle.dumps([(number, result, None if error is None else RuntimeError(repr(error)))
                             for number, result, error in outcomes], protocol=pickle.HIGHEST_PROTOCOL)


if __name__ == "__main__":  # started by storage/sqlite/writer.py: python -m hearth.storage.sqlite.writer_process FD PATH SYNC
    # [LISTEN_FD] (a listening Unix socket: the shared writer of `hearth serve --workers N`)
    _serve(Connection(int(sys.argv[1])), sys.argv[2], sys.argv[3],
           socket.socket(fileno=int(sys.argv[4])) if len(sys.argv) > 4 else None)
