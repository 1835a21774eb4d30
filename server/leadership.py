"""The group's once-only work, run by whichever process holds the store's `group` lease.

Every process of a `hearth serve --workers N` group (and every replica on one MongoDB) runs a `Leadership`: it
tries to take the lease every third of its length, and the holder runs the work (subscription matching, delivery
and heartbeats, connectors and their MLLP listeners, audit retention). The lease is judged by the store's clock
(storage/*/leases.py), so hosts whose clocks drift agree on who holds it; a holder that cannot renew stops the work
when its lease runs out by its own monotonic clock, before anyone else may take it over. A holder that ended
without giving the lease up (killed) is replaced when the lease expires, or at once by a process of the same
machine that sees it no longer runs (storage/owners.py). What the work writes is guarded beyond the lease: a
connector's checkpoint is fenced by its own lease's token, the dispatcher's queue by compare-and-set on its
checkpoint, each delivery by its owner (docs/scale-out.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Awaitable, Callable

from hearth.storage.base import Lease, Leases
from hearth.storage.owners import new_owner, take_lease

log = logging.getLogger("hearth.leadership")

LEASE_NAME = "group"


class Leadership:
    def __init__(self, leases: Leases, lead: Callable[[], Awaitable[None]], step_down: Callable[[], Awaitable[None]],
                 seconds: float) -> None:
        self.leases, self.lead, self.step_down, self.seconds = leases, lead, step_down, seconds
        self.owner = new_owner()
        self.lease: Lease | None = None
        self._valid_until = 0.0  # by this process's monotonic clock: no later than the store's expiry

    @property
    def leading(self) -> bool:
        return self.lease is not None

    async def step(self) -> None:
        """Take or renew the lease, and start or stop the work accordingly."""
        asked = time.monotonic()
        try:
            lease = await self._acquire()
        except Exception:  # the store is away: keep leading only while the lease surely holds
            log.warning("the group lease could not be renewed", exc_info=True)
            lease = self.lease if time.monotonic() < self._valid_until else None
        else:
            if lease is not None:
                self._valid_until = asked + self.seconds
        if self.lease is not None and (lease is None or lease.token != self.lease.token):
            # lost (or lost and taken again: someone may have led in between, so the work starts afresh)
            log.warning("no longer leading the group (lease token %d lost)", self.lease.token)
            self.lease = None
            await self.step_down()
        if lease is not None and self.lease is None:
            log.info("leading the group (lease token %d)", lease.token)
            await self.lead()
        self.lease = lease

    async def _acquire(self) -> Lease | None:
        return await take_lease(self.leases, LEASE_NAME, self.owner, self.seconds)

    async def run(self) -> None:
        """Renew or take the lease every third of its length (after a first `step`) until cancelled; then the work
        is stopped and the lease given up."""
        try:
            while True:
                await asyncio.sleep(self.seconds / 3)
                await self.step()
        finally:
            if self.lease is not None:
                lease, self.lease = self.lease, None
                await self.step_down()
                with contextlib.suppress(Exception):
                    await self.leases.release(lease)
