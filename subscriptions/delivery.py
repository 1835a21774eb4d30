"""Rest-hook delivery: claim due work with a lease, send it, retry with backoff, give up after the horizon.

At least once: a delivery leaves the queue only after the endpoint answered 2xx (a crash in between
sends it again once the lease expires; event numbers let receivers drop duplicates). A failure is
retried after `base * 2^attempts` seconds (capped), scaled by a random factor in [0.5, 1] (jitter, so
a recovering endpoint is not hit by every subscriber at once). A circuit breaker per endpoint stops
calling an endpoint after `breaker_threshold` failures in a row, for `breaker_cooldown` seconds, then
lets one probe through. When a delivery has been failing for longer than the horizon, the subscription
goes to `error` with `Subscription.error` saying why; its events stay available through `$events`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import aiohttp
from aiohttp.abc import AbstractResolver

from hearth.interactions.context import Context
from hearth.storage.store_clock import StoreClock
from hearth.subscriptions import notifications
from hearth.subscriptions.channels import DeliveryFailed, Outgoing, send
from hearth.subscriptions.egress import EgressPolicy, GuardedResolver
from hearth.subscriptions.model import Subscription
from hearth.subscriptions.queue import Delivery, NotificationQueue
from hearth.subscriptions.registry import Registry
from hearth.subscriptions.wake import sleep_until_set

log = logging.getLogger("hearth.subscriptions")

SetStatus = Callable[[str, str, str | None], Awaitable[None]]


@dataclass(frozen=True)
class DeliveryConfig:
    retry_horizon: float = 24 * 3600.0  # seconds a delivery keeps being retried
    retry_base: float = 1.0  # first retry after about this many seconds
    retry_max: float = 3600.0  # retries at least this often
    breaker_threshold: int = 5
    breaker_cooldown: float = 30.0
    # a claim of a process that died mid-delivery is taken over after this long (at once by a successor on the same
    # machine: storage/owners.py)
    lease: float = 30.0
    concurrency: int = 64  # deliveries in flight per process
    poll: float = 0.05  # seconds at least between looks at the queue when nothing woke the sender
    # seconds at most between looks when nothing is expected (a retry this process scheduled wakes it on time):
    # what other processes left (a lease that expired, a retry they scheduled) is taken up within this time
    idle_poll: float = 1.0

    def backoff(self, attempts: int) -> float:
        return min(self.retry_max, self.retry_base * 2 ** min(attempts, 40)) * random.uniform(0.5, 1.0)


class Breaker:
    """Closed -> open after `threshold` failures in a row -> one probe after `cooldown` -> closed or open."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self.last_error = ""

    def allow(self, now: float) -> bool:
        if self.failures < self.threshold:
            return True
        if now < self.open_until or self.probing:
            return False
        self.probing = True
        return True

    def succeeded(self) -> None:
        self.failures, self.probing = 0, False

    def failed(self, now: float, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = now + self.cooldown


class Deliverer:
    def __init__(self, ctx: Context, queue: NotificationQueue, registry: Registry, config: DeliveryConfig,
                 owner: str, set_status: SetStatus, egress: EgressPolicy, resolver: AbstractResolver,
                 clock: StoreClock) -> None:
        self.ctx, self.queue, self.registry, self.config = ctx, queue, registry, config
        self.clock = clock  # claims, due times and the retry horizon: the store's clock, shared by every process
        self.owner, self.set_status = owner, set_status
        self.egress, self.resolver = egress, resolver
        self.breakers: dict[str, Breaker] = {}
        self.last_sent: dict[str, float] = {}  # subscription id -> time of its last successful notification
        self.wake = asyncio.Event()
        self.next_retry = math.inf  # the earliest due time of a retry this process scheduled
        self._in_flight: set[asyncio.Task] = set()
        # one delivery at a time per subscription, in claim order (oldest first): receivers see order
        self._turns: dict[str, asyncio.Lock] = {}

    async def run(self) -> None:
        # every name is resolved through the egress policy: what is connected to is what was checked
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.egress, self.resolver))
        async with aiohttp.ClientSession(connector=connector) as session:
            try:
                while True:
                    room = self.config.concurrency - len(self._in_flight)
                    now = await self.clock.fresh()
                    if room > 0 and await self.queue.due(now):
                        for group in self._groups(await self.queue.claim(self.owner, now, self.config.lease, room)):
                            task = asyncio.create_task(self._in_turn(session, group))
                            self._in_flight.add(task)
                            task.add_done_callback(self._finished)
                        continue
                    self.wake.clear()
                    if self.next_retry <= now:  # this look was for it
                        self.next_retry = math.inf
                    wait = min(self.config.idle_poll, max(self.config.poll, self.next_retry - now))
                    await sleep_until_set(self.wake, wait)
            finally:
                for task in list(self._in_flight):
                    task.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _finished(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        self.wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("delivery failed unexpectedly", exc_info=task.exception())

    def _groups(self, claimed: list[Delivery]) -> list[list[Delivery]]:
        """Claimed work in claim order, events of a backport subscription batched up to its max count."""
        groups: list[list[Delivery]] = []
        open_groups: dict[str, list[Delivery]] = {}
        for delivery in claimed:
            subscription = self.registry.get(delivery.subscription)
            limit = subscription.max_count if subscription and subscription.backport else 1
            group = open_groups.get(delivery.subscription)
            if delivery.kind == "event" and group is not None and len(group) < limit:
                group.append(delivery)
                continue
            group = [delivery]
            groups.append(group)
            if delivery.kind == "event":
                open_groups[delivery.subscription] = group
            else:
                open_groups.pop(delivery.subscription, None)
        return groups

    async def _in_turn(self, session: aiohttp.ClientSession, group: list[Delivery]) -> None:
        subscription_id = group[0].subscription
        turn = self._turns.setdefault(subscription_id, asyncio.Lock())
        try:
            async with turn:
                await self.deliver(session, group)
        finally:
            if not turn.locked() and not turn._waiters:
                self._turns.pop(subscription_id, None)

    async def deliver(self, session: aiohttp.ClientSession, group: list[Delivery]) -> None:
        """Send one notification for `group` (one handshake, one heartbeat, or events of one subscription)."""
        first = group[0]
        subscription = self.registry.get(first.subscription)
        now = self.clock.now()
        if subscription is None or subscription.status in ("off", "error") or subscription.channel.type != "rest-hook":
            await self._each(self.queue.complete, group)  # moot: $events still has the events
            return
        if first.kind != "handshake" and subscription.status == "requested":  # the handshake goes first
            await self._retry(group, now + self.config.retry_base, None, False)
            return
        endpoint = subscription.channel.endpoint or ""
        breaker = self.breakers.setdefault(endpoint, Breaker(self.config.breaker_threshold,
                                                             self.config.breaker_cooldown))
        if not breaker.allow(now):
            if now - min(d.created for d in group) >= self.config.retry_horizon:
                await self._give_up(subscription, group, f"circuit breaker open; last error: {breaker.last_error}")
                return
            # back when the breaker lets a probe through, or when the horizon is reached, whichever is first
            horizon = min(d.created for d in group) + self.config.retry_horizon
            due = max(min(breaker.open_until, horizon), now + self.config.poll)
            await self._retry(group, due, "circuit open", False)
            return
        try:
            outgoing = await self._outgoing(subscription, group)
            if outgoing is not None:
                # within the lease, so that no other process takes the work over while it is being sent
                await send(session, self.egress, subscription.channel, outgoing,
                           min(subscription.timeout, self.config.lease / 2))
        except DeliveryFailed as failure:
            breaker.failed(self.clock.now(), str(failure))
            await self._failed(subscription, group, str(failure))
            return
        breaker.succeeded()
        self.last_sent[subscription.id] = self.clock.now()
        await self._each(self.queue.complete, group)
        if first.kind == "handshake":
            await self.set_status(subscription.id, "active", None)

    @staticmethod
    async def _each(action: Callable[[Delivery], Awaitable[None]], group: list[Delivery]) -> None:
        await asyncio.gather(*(action(delivery) for delivery in group))

    async def _retry(self, group: list[Delivery], due: float, error: str | None, attempted: bool) -> None:
        self.next_retry = min(self.next_retry, due)
        await self._each(lambda d: self.queue.retry(d, due, error, attempted), group)

    async def _failed(self, subscription: Subscription, group: list[Delivery], error: str) -> None:
        now = self.clock.now()
        if now - min(d.created for d in group) >= self.config.retry_horizon:
            await self._give_up(subscription, group, error)
            return
        await self._retry(group, now + self.config.backoff(max(d.attempts for d in group)), error, True)

    async def _give_up(self, subscription: Subscription, group: list[Delivery], error: str) -> None:
        attempts = max(d.attempts for d in group) + 1
        log.warning("Subscription/%s: giving up after %d attempts: %s", subscription.id, attempts, error)
        await self.queue.drop(subscription.id)
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(d.created for d in group)))
        await self.set_status(subscription.id, "error", f"Notifications failing since {since}: {error}")

    async def _outgoing(self, subscription: Subscription, group: list[Delivery]) -> Outgoing | None:
        kind = group[0].kind
        if kind != "event":
            count = await self.queue.event_count(subscription.id)
            return await notifications.backport_outgoing(self.ctx, subscription, kind, count)
        numbers = {d.number or 0 for d in group}
        low, high = min(numbers), max(numbers)
        events = [e for e in await self.queue.events(subscription.id, low, high, high - low + 1) if e.number in numbers]
        if not events:
            return None
        if not subscription.backport:
            return await notifications.r4_outgoing(self.ctx, subscription, events[0])
        count = await self.queue.event_count(subscription.id)
        return await notifications.backport_outgoing(self.ctx, subscription, "event-notification", count, events)
