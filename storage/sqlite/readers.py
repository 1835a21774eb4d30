"""The SQLite reader threads: each with a connection of its own, each task bounded by a deadline.

A watchdog thread interrupts (sqlite3 `Connection.interrupt()`) a task's statement once the task has run past the
deadline, and again every tick while it still runs (an interrupt that lands between two statements is lost: SQLite
clears it when the next one starts). The interrupted task fails with SearchTimedOut (storage/base.py; a 400
`too-costly` naming HEARTH_SEARCH_TIMEOUT to the client) and its thread takes the next task. Why a watchdog and not
a progress handler: a handler is a call into Python every N steps of SQLite's VM, and each call waits for the
interpreter lock, up to the switch interval (5 ms) when the event loop is busy; an interrupt costs the running
statement nothing.

The threads are daemon threads, so one that never comes back (an interrupt lost, a statement SQLite cannot stop)
does not hold up the interpreter's exit; `stuck` is the alarm for that case, `/readyz` reports it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

from hearth.storage.base import SearchTimedOut, StoreClosing

Work = Callable[[sqlite3.Connection], Any]


@dataclass(eq=False)
class _Task:
    conn: sqlite3.Connection
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False


class Readers:
    """`size` reader threads on `connect()`-ed connections; `timeout` seconds a task may run (0: no deadline)."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], size: int, timeout: float) -> None:
        self.timeout = timeout
        self._connect = connect
        self._tasks: queue.SimpleQueue[tuple[Future, Work] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _running: a task is interrupted only while it is registered there
        self._running: dict[int, _Task] = {}  # by thread
        self._closing = threading.Event()
        self._threads = [threading.Thread(target=self._serve, name=f"hearth-sqlite-reader-{n}", daemon=True)
                         for n in range(size)]
        if timeout > 0:
            self._threads.append(threading.Thread(target=self._watch, name="hearth-sqlite-watchdog", daemon=True))
        for thread in self._threads:
            thread.start()

    async def run(self, work: Work) -> Any:
        """`work(connection)` on a reader thread; SearchTimedOut when it runs past the deadline, StoreClosing once
        the pool closes."""
        if self._closing.is_set():
            raise StoreClosing("Hearth is shutting down")
        future: Future = Future()
        self._tasks.put((future, work))
        return await asyncio.wrap_future(future)

    def stuck(self, grace: float) -> str | None:
        """Why the pool is not ready: a task running past the deadline and `grace` more (it should have been
        interrupted), or None."""
        if self.timeout <= 0:
            return None
        now = time.monotonic()
        with self._lock:
            longest = max((now - task.started for task in self._running.values()), default=0.0)
        if longest <= self.timeout + grace:
            return None
        return (f"a SQLite reader thread has been busy on one task for {longest:.0f} s, past HEARTH_SEARCH_TIMEOUT "
                f"({self.timeout:g} s) and {grace:g} s of grace: its statement was not stopped")

    def close(self, wait: float) -> None:
        """Interrupt what runs, end the threads; wait `wait` seconds at most for them (a stuck one is left)."""
        self._closing.set()
        with self._lock:
            for task in self._running.values():
                task.conn.interrupt()
        for _ in range(len(self._threads)):
            self._tasks.put(None)
        end = time.monotonic() + wait
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def _serve(self) -> None:
        conn = self._connect()
        me = threading.get_ident()
        try:
            while (item := self._tasks.get()) is not None:
                future, work = item
                if self._closing.is_set():
                    future.cancel()
                if not future.set_running_or_notify_cancel():
                    continue
                task = _Task(conn)
                with self._lock:
                    self._running[me] = task
                try:
                    result, error = work(conn), None
                except BaseException as exc:  # handed to the waiting caller
                    result, error = None, exc
                with self._lock:
                    del self._running[me]
                if conn.in_transaction:  # a statement was interrupted inside the work's transaction
                    conn.rollback()
                if error is None:
                    future.set_result(result)
                elif task.interrupted and isinstance(error, sqlite3.OperationalError):
                    future.set_exception(SearchTimedOut(self.timeout))
                else:
                    future.set_exception(error)
        finally:
            conn.close()

    def _watch(self) -> None:
        tick = min(max(self.timeout / 10, 0.01), 1.0)
        while not self._closing.wait(tick):
            now = time.monotonic()
            with self._lock:
                for task in self._running.values():
                    if now - task.started > self.timeout:
                        task.interrupted = True
                        task.conn.interrupt()
