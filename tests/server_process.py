"""A real `hearth serve` process for tests that need uvicorn itself (sockets, signals, restarts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(db: Path, port: int, **settings: str | None) -> subprocess.Popen:
    """`hearth serve` on `db` and `port` with extra HEARTH_* `settings` (e.g. header_timeout="1"; None: unset), once
    ready: one server process unless `workers` says otherwise (a crash test kills the process it started)."""
    env = {**os.environ, "HEARTH_STORAGE": str(db), "HEARTH_PORT": str(port), "HEARTH_WORKERS": "1",
           **{f"HEARTH_{name.upper()}": value for name, value in settings.items()}}
    env = {name: value for name, value in env.items() if value is not None}
    process = subprocess.Popen([sys.executable, "-m", "hearth.server.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)  # a group of its own: `kill_group` ends every process of it
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode())
    process.kill()
    raise AssertionError("server did not become ready")


def stop(process: subprocess.Popen, hard: bool) -> None:
    process.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
    process.wait(timeout=30)


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to every process `start` started (a `--workers N` supervisor, its servers, its writer): a crash."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
