"""`hearth serve --workers N`: a supervisor running N server processes on one listening socket and, on SQLite, the
one writer process they share (storage/sqlite/writer.py's SharedWriter), so a group commits as one server does.

The server processes accept from the one socket the supervisor bound (uvicorn's own multi-process idiom), so a
process that ends loses no queued connection. Any of them may run the group's once-only work (subscription
delivery, connectors and their HL7 v2 listeners, audit retention): whichever holds the store's group lease
(server/leadership.py).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import fields

from hearth.server.settings import Settings
from hearth.storage import sqlite_path

log = logging.getLogger("hearth.server")

LISTEN_FD = "HEARTH_LISTEN_FD"  # set by the supervisor for its server processes: the listening socket's descriptor
_MIN_UPTIME = 5.0  # seconds: a process that ends sooner is failing to start, and the group stops instead
_LOOK = 0.2  # seconds between looks at the processes


def inherited_socket() -> socket.socket | None:
    """The listening socket a supervisor handed this process, or None (not a server process of a group)."""
    fd = os.environ.pop(LISTEN_FD, None)  # (not inherited by what this process starts)
    return None if fd is None else socket.socket(fileno=int(fd))


def watch_parent() -> None:
    """Have the kernel send this process SIGTERM when its supervisor ends, however it ends (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Group:
    """The supervisor: binds the port, starts the shared writer (SQLite) and the server processes, starts again one
    that ends, and on SIGTERM or SIGINT stops the server processes (each finishes its requests), then the writer."""

    def __init__(self, settings: Settings, shutdown_seconds: float, arguments: list[str]) -> None:
        """`arguments`: what each server process's `hearth serve` gets besides the settings (TLS files)."""
        self.settings, self.shutdown_seconds, self.arguments = settings, shutdown_seconds, arguments
        self.stopping = False

    def run(self) -> int:
        """Serve until told to stop; the exit status."""
        from hearth.storage.sqlite.store import prepare
        from hearth.storage.sqlite.writer import SharedWriter

        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        try:
            self.listening = socket.create_server((self.settings.host, self.settings.port), family=family,
                                                  backlog=2048)
        except OSError as error:
            log.error("cannot listen on %s:%s: %s", self.settings.host, self.settings.port, error)
            return 1
        path = sqlite_path(self.settings.storage)
        self.metrics_dir = tempfile.mkdtemp(prefix="hearth-metrics-")  # 0700: the processes' figures (/metrics)
        self.writer: SharedWriter | None = None
        if path is not None:
            prepare(path, self.settings.sqlite_synchronous)  # once, before the server processes open the store
            self.writer = SharedWriter(path, self.settings.sqlite_synchronous)
        for stop in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop, self._stop)
        self.processes = [self._start() for _ in range(self.settings.workers)]
        try:
            return self._supervise()
        finally:
            self._shut_down()

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self) -> tuple[subprocess.Popen, float]:
        """A server process and when it started."""
        env = {**os.environ, **self._environment()}
        command = [sys.executable, "-m", "hearth.server.cli", "serve", *self.arguments]
        return subprocess.Popen(command, env=env, pass_fds=[self.listening.fileno()]), time.monotonic()

    def _environment(self) -> dict[str, str]:
        """The settings as HEARTH_* variables (decided once, here), with the process's part in the group (any of
        them may lead it: server/leadership.py)."""
        env = {f"HEARTH_{field.name.upper()}": str(getattr(self.settings, field.name))
               for field in fields(Settings)}
        env.update(HEARTH_WORKERS="1",
                   HEARTH_SQLITE_WRITER=self.writer.address if self.writer is not None else "",
                   HEARTH_METRICS_DIR=self.metrics_dir,
                   **{LISTEN_FD: str(self.listening.fileno())})
        return env

    def _supervise(self) -> int:
        while not self.stopping:
            time.sleep(_LOOK)
            if self.writer is not None and self.writer.ended():
                log.error("the shared SQLite writer process ended (exit status %s); starting another",
                          self.writer.process.returncode)
                self.writer.restart()
            for index, (process, started) in enumerate(self.processes):
                if process.poll() is None or self.stopping:
                    continue
                if time.monotonic() - started < _MIN_UPTIME:
                    log.error("server process %d ended at start-up (exit status %s): stopping", index,
                              process.returncode)
                    return 1
                log.error("server process %d ended (exit status %s); starting another", index, process.returncode)
                self.processes[index] = self._start()
        return 0

    def _shut_down(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _ in self.processes:
            try:
                process.wait(timeout=self.shutdown_seconds + 25)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.writer is not None:
            self.writer.stop()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.listening.close()
