"""A one-line progress bar on a terminal: redrawn in place, throttled, silent when the stream is not a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_INTERVAL = 0.1  # seconds between redraws: drawing every step would cost more than the work


class ProgressBar:
    """Progress towards `total` units (e.g. bytes of input), with a free-text status after the bar."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.status = ""
        self._drawn_at = 0.0
        self._width = 0

    def advance(self, units: int, status: str | None = None) -> None:
        self.done = min(self.done + units, self.total)
        self.show(status)

    def show(self, status: str | None = None, force: bool = False) -> None:
        if status is not None:
            self.status = status
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._drawn_at < _INTERVAL:
            return
        self._drawn_at = now
        filled = _WIDTH * self.done // self.total
        line = f"[{'#' * filled}{'.' * (_WIDTH - filled)}] {100 * self.done // self.total:3d}% {self.status}"
        # pad over the previous, possibly longer, line instead of relying on terminal escapes
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Leave the bar at its final state and move to a fresh line."""
        if self.enabled:
            self.show(force=True)
            self.stream.write("\n")
            self.stream.flush()
