"""Timestamps as the stores keep them: UTC, microseconds, fixed-width text that sorts correctly."""

from __future__ import annotations

from datetime import datetime, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_text(moment: datetime) -> str:
    """`2026-11-24T18:42:07.123456` (UTC), the form index entries use too."""
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)  # ~7x faster than strptime


def to_instant(moment: datetime) -> str:
    """FHIR instant as served in meta.lastUpdated: `2026-11-24T18:42:07.123456Z`."""
    return to_text(moment) + "Z"
