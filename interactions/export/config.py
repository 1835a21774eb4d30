"""The export settings (HEARTH_EXPORT_*, docs/bulk-export.md), as the export service takes them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportConfig:
    directory: Path  # the jobs' files, one folder per job
    retention: float = 3600.0  # seconds a finished job and its files are kept
    max_jobs: int = 2  # jobs accepted or running at once; more kick-offs answer 429
    file_bytes: int = 100_000_000  # an NDJSON file is closed and the next one begun past this size
    poll: float = 1.0  # seconds between a worker's looks for jobs (a kick-off in this process wakes it at once)
    lease: float = 60.0  # seconds a worker's claim on a job lasts unless renewed (renewed with every page)
    page: int = 1000  # resources read from the store per page
    attempts: int = 3  # claims of one job (restarts included) before it is failed
    requires_token: bool = False  # authorization is on: downloads need the kick-off's client's token


def export_directory(configured: str, storage: str) -> Path:
    """`configured`, or `exports` beside the SQLite file, or ./data/exports for MongoDB."""
    if configured:
        return Path(configured)
    if storage.startswith(("mongodb://", "mongodb+srv://")):
        return Path("data") / "exports"
    return Path(storage.removeprefix("sqlite:///")).resolve().parent / "exports"
