"""A job's NDJSON files: one folder per job (a subfolder per attempt), and per type `Type-1.ndjson`,
`Type-2.ndjson`… (`errors-N.ndjson` for OperationOutcomes, `deleted-N.ndjson` for the Bundles of deletions), the
next begun once a file reaches the size limit. Blocking file work: run it off the loop."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import BinaryIO

NDJSON = "application/fhir+ndjson"
_NAME = re.compile(r"[A-Za-z]+-[0-9]+\.ndjson")


class NdjsonFiles:
    """The files of one type being written; `written` lists (name, lines) of each file begun."""

    def __init__(self, folder: Path, prefix: str, limit: int) -> None:
        self.folder, self.prefix, self.limit = folder, prefix, limit
        self.written: list[tuple[str, int]] = []
        self._file: BinaryIO | None = None
        self._size = 0

    def write(self, lines: list[bytes]) -> None:
        """Append one resource per line (each `lines` item a JSON object without its newline)."""
        batch: list[bytes] = []
        for line in lines:
            if self._file is None or (self._size + len(line) + 1 > self.limit and self.written[-1][1]):
                self._flush(batch)
                batch = []
                self._begin()
            batch.append(line)
            self._size += len(line) + 1
            name, count = self.written[-1]
            self.written[-1] = (name, count + 1)
        self._flush(batch)

    def _flush(self, batch: list[bytes]) -> None:
        if batch and self._file is not None:
            batch.append(b"")
            self._file.write(b"\n".join(batch))

    def _begin(self) -> None:
        self.close()
        name = f"{self.prefix}-{len(self.written) + 1}.ndjson"
        self._file = open(self.folder / name, "wb")
        self._size = 0
        self.written.append((name, 0))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def prepare(folder: Path) -> None:
    """An empty folder for a job's attempt (what earlier attempts wrote, in their sibling folders, is removed)."""
    shutil.rmtree(folder.parent, ignore_errors=True)
    folder.mkdir(parents=True)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def valid_name(name: str) -> bool:
    """Whether `name` is one of the names files are given (so a download never leaves the job's folder)."""
    return _NAME.fullmatch(name) is not None
