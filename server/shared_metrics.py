"""One `/metrics` for a `hearth serve --workers N` group: each process writes its counters and histograms to a file
of the group's private folder (HEARTH_METRICS_DIR, made by the supervisor, 0700) every second, and whichever process
answers a scrape adds the others' files to its own figures.

The processes take turns accepting connections, so without this a scrape would see one process's counters, and
Prometheus would take the jump from one process's to another's for a reset. A file stays when its process ends, so
the group's counters never go down while the supervisor runs (a process started in its place writes a file of its
own). Figures from the store (the subscription backlog, the connectors') are the same in every process and are not
shared this way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import orjson

from hearth.server.metrics import Metrics

log = logging.getLogger("hearth.metrics")


class SharedMetrics:
    def __init__(self, metrics: Metrics, folder: str, every: float = 1.0) -> None:
        self.metrics, self.folder, self.every = metrics, Path(folder), every
        self.path = self.folder / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"  # a pid is reused, this name is not

    def peers(self) -> list[dict[str, Any]]:
        """The other processes' latest snapshots (a file being replaced is read whole, before or after)."""
        found = []
        for path in self.folder.glob("*.json"):
            if path == self.path:
                continue
            try:
                found.append(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError):  # gone meanwhile (the folder removed at shutdown)
                continue
        return found

    def write(self) -> None:
        partial = self.path.with_suffix(".part")
        partial.write_bytes(orjson.dumps(self.metrics.snapshot()))
        os.replace(partial, self.path)  # atomic: a reader sees the old file or the new one

    async def run(self) -> None:
        """Write the snapshot every `every` seconds until cancelled."""
        self.metrics.peers = self.peers
        while True:
            try:
                self.write()
            except OSError:
                log.warning("could not write this process's metrics to %s", self.folder, exc_info=True)
            await asyncio.sleep(self.every)
