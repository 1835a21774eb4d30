"""A real `hearth serve` (uvicorn) in a subprocess, on a temporary SQLite file and a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (Linux /proc)."""
    tree = [pid]
    try:
        children = [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                    for child in (task / "children").read_text().split()]
    except FileNotFoundError:  # ended meanwhile
        return tree
    for child in children:
        tree.extend(_process_tree(child))
    return tree


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:  # ended meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


class HearthProcess:
    """`hearth serve` with the benchmark floor route enabled (HEARTH_BENCH_FLOOR=1)."""

    def __init__(self, database: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.database = database
        self.log = log
        self.process: subprocess.Popen | None = None
        self.env = env or {}  # HEARTH_* settings of this server

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        # one server process unless `env` says otherwise: the figures compare one process with the floor's
        env = {**os.environ, "HEARTH_BENCH_FLOOR": "1", "HEARTH_WORKERS": "1", **self.env}
        command = [sys.executable, "-m", "hearth.server.cli", "serve", "--host", self.host, "--port", str(self.port),
                   "--storage", str(self.database), "--log-level", "warning"]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hearth serve exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"hearth serve did not become ready in {timeout} s; see {self.log}")

    def token(self, scope: str) -> str:
        """A bearer token for `scope`, issued by the server's own authorization server (`hearth tokens issue`)."""
        def hearth(*args: str) -> dict:
            command = [sys.executable, "-m", "hearth.server.cli", *args, "--storage", str(self.database),
                       "--base-url", self.base_url]
            return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        hearth("clients", "add", "bench", "--scope", scope, "--secret")
        return hearth("tokens", "issue", "--client", "bench", "--scope", scope)["access_token"]

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process and its children (the SQLite writer process), in
        seconds (Linux /proc)."""
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
