"""The store's clock as one process reads it: this host's time plus an offset measured through `Leases.now`.

Work that processes share through the store is timed by the database's clock, like the leases themselves
(storage/*/leases.py), so hosts whose clocks drift still agree on when a subscription delivery is due and whose claim
on it has run out. Asking the database for every timestamp would cost a round trip each: the offset is measured
when the work starts and again every `every` seconds.
"""

from __future__ import annotations

import time

from hearth.storage.base import Leases


class StoreClock:
    def __init__(self, leases: Leases, every: float = 60.0) -> None:
        self.leases, self.every = leases, every
        self.offset = 0.0  # the store's clock minus this host's, in seconds
        self._measured = -float("inf")  # monotonic time of the last measure

    async def sync(self) -> None:
        """Measure the offset now (half the round trip is taken as the way there)."""
        before = time.time()
        store = await self.leases.now()
        self.offset = store - (before + time.time()) / 2
        self._measured = time.monotonic()

    def now(self) -> float:
        """The store's time, epoch seconds, by the last measured offset."""
        return time.time() + self.offset

    async def fresh(self) -> float:
        """`now`, measuring the offset again first when it is older than `every`."""
        if time.monotonic() - self._measured > self.every:
            await self.sync()
        return self.now()
