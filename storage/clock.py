"""Timestamps as the stores keep them: UTC, microseconds, fixed-width text that sorts correctly."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_text(moment: datetime) -> str:
    """`2026-11-24T18:42:07.123456` (UTC), the form index entries use too."""
    # isoformat: ~5x faster than strftime, and always four year digits
    return moment.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)  # ~7x faster than strptime


def to_instant(moment: datetime) -> str:
    """FHIR instant as served in meta.lastUpdated: `2026-11-24T18:42:07.123456Z`."""
    return to_text(moment) + "Z"


def parse_instant(text: str) -> datetime:
    """A FHIR instant (`2026-11-24T18:42:07.1Z`, `…+02:00`; a date alone is its midnight, UTC) as an aware datetime;
    ValueError if it is none."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
