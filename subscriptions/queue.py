"""The durable notification queue every backend implements (storage/*/notification_queue.py).

It holds, in the database the resources live in:
- the dispatcher's checkpoint: the last change-log seq turned into events;
- events: per subscription, numbered 1, 2, 3 … (`eventsSinceSubscriptionStart`), kept for `$events`;
- deliveries: work for the rest-hook sender (an event, a handshake or a heartbeat), each with its
  attempts, the time it is next due, and a lease (owner, expiry) so several processes never deliver
  the same item at the same time (a dead process's claim is taken over once the lease expires, or at once
  by a successor on the same machine: storage/owners.py).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from hearth.storage.notification_records import Delivery, Event, NewEvent

__all__ = ["Delivery", "Event", "NewEvent", "NotificationQueue"]


class NotificationQueue(Protocol):
    async def open(self) -> None:
        """Create tables / collections and indexes."""

    async def checkpoint(self) -> int: ...

    async def enqueue(self, after_seq: int, upto_seq: int, events: Sequence[NewEvent],
                      handshakes: Sequence[tuple[str, int]], now: float) -> bool:
        """Record `events` and `handshakes` ((subscription, seq of its change)) and move the checkpoint
        from `after_seq` to `upto_seq`, all at once; their deliveries created and due at `now` (the store's clock:
        storage/store_clock.py, as for every time of this queue). False (nothing recorded) when the checkpoint is no
        longer `after_seq`: another dispatcher got there first."""

    async def add_delivery(self, subscription: str, kind: str, now: float) -> None:
        """Queue a handshake or heartbeat, due `now`."""

    async def due(self, now: float) -> bool:
        """Whether any delivery is due and unleased (a cheap read before claiming)."""

    async def claim(self, owner: str, now: float, lease_seconds: float, limit: int) -> list[Delivery]: ...

    async def lease_owners(self, now: float) -> set[str]:
        """The owners holding a lease that has not expired at `now`."""

    async def release(self, owner: str) -> None:
        """Give up every claim of `owner` (a process that is gone): its work can be claimed again at once."""

    async def complete(self, delivery: Delivery) -> None:
        """The delivery succeeded (or is moot): forget it, unless its claim has passed to another owner since (this
        one paused past its lease): then the other's claim stands and its owner completes it."""

    async def retry(self, delivery: Delivery, due: float, error: str | None, attempted: bool) -> None:
        """Release the lease and make the delivery due again at `due` (`attempted`: count an attempt); nothing if
        the claim has passed to another owner."""

    async def drop(self, subscription: str) -> None:
        """Forget every pending delivery of a subscription (it went to error or off, or was deleted)."""

    async def events(self, subscription: str, first: int, last: int | None, limit: int) -> list[Event]:
        """Events numbered `first`..`last` (inclusive; None: no upper bound), oldest first."""

    async def event_count(self, subscription: str) -> int:
        """Events recorded since the subscription started (the highest event number)."""

    async def secret(self) -> bytes:
        """A random key made once per database: it signs websocket binding tokens, so that any process
        on the database accepts a token any other one issued."""
