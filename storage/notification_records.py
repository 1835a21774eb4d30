"""The records of the durable notification queue (protocol: subscriptions/queue.py), shared by the backends."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A change that matched a subscription; `deliver`: also queue it for the rest-hook sender."""

    subscription: str
    seq: int
    type: str
    id: str
    version_id: int
    interaction: str
    timestamp: datetime
    deliver: bool


@dataclass(frozen=True, slots=True)
class Event:
    subscription: str
    number: int
    seq: int
    type: str
    id: str
    version_id: int
    interaction: str
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One claimed piece of delivery work. `kind`: event | handshake | heartbeat (`number` for events)."""

    key: Any
    subscription: str
    kind: str
    number: int | None
    created: float  # epoch seconds: the retry horizon runs from here
    attempts: int
    owner: str  # who claimed it: only its owner completes it or schedules its retry
