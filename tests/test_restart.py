"""Data written before a restart is there after it (a real `hearth serve` process, stopped and started)."""

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


def start(db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HEARTH_STORAGE": str(db), "HEARTH_PORT": str(port)}
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


def test_data_survives_restart_and_kill(tmp_path):
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(db, port)
    try:
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "female"},
                             headers={"Content-Type": "application/fhir+json"}).json()
        httpx.put(f"{base}/Patient/{created['id']}", json={**created, "gender": "male"},
                  headers={"Content-Type": "application/fhir+json"})
    finally:
        stop(server, hard=False)
    server = start(db, port)
    try:
        read = httpx.get(f"{base}/Patient/{created['id']}")
        assert read.status_code == 200 and read.json()["gender"] == "male"
        assert read.headers["etag"] == 'W/"2"'
        written = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "other"},
                             headers={"Content-Type": "application/fhir+json"}).json()
    finally:
        stop(server, hard=True)  # a crash right after the response: a committed write must survive
    server = start(db, port)
    try:
        assert httpx.get(f"{base}/Patient/{written['id']}").json()["gender"] == "other"
        assert httpx.get(f"{base}/_history").json()["total"] == 3
    finally:
        stop(server, hard=False)
