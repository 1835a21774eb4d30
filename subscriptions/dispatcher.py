"""The dispatcher: change log -> matching -> events in the durable queue, from a durable checkpoint.

Each pass reads the changes after what this process has seen, refreshes its registry for Subscription
changes, matches the changes past the durable checkpoint against the registry, and records the events
and moves the checkpoint in one storage operation (a compare-and-set on the checkpoint). A process that
dies after a commit and before this leaves the checkpoint behind: the next start matches those changes
again. Several processes tail the same log; only one wins each range, the others re-read the checkpoint.

Matching one change against one subscription has a budget (HEARTH_SUBSCRIPTION_MATCH_TIMEOUT): chains and
`_has` in criteria read the store, and a costly or failing criteria must not hold up everyone's notifications.
A subscription whose matching raises or overruns is stopped (`stop`: status `error`, `Subscription.error`
saying why, out of matching until a client writes it again) and the pass goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any, Awaitable, Callable

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.search.matcher import Prepared
from hearth.interactions.context import Context
from hearth.interactions.request import Request
from hearth.interactions.resources import index_entries
from hearth.interactions.search import exists_for
from hearth.storage.base import Change, Version
from hearth.storage.store_clock import StoreClock
from hearth.subscriptions.model import MATCHING_STOPPED, Subscription
from hearth.subscriptions.queue import NewEvent, NotificationQueue
from hearth.subscriptions.registry import Registry, Target

log = logging.getLogger("hearth.subscriptions")

Refresh = Callable[[Change], Awaitable[tuple[str, int] | None]]
"""refresh(change of a Subscription): update the registry; (id, seq) when it needs a handshake."""
Stop = Callable[[str, str], Awaitable[None]]
"""stop(subscription id, error): record that the subscription is in error for this reason."""


# Changes that cause no event move the checkpoint in memory only, written at most this often: a crash
# re-reads them at start-up (they cause no event again), and idle writes do not cost a commit each.
_LAZY_CHANGES = 5000
_LAZY_SECONDS = 5.0


class Dispatcher:
    def __init__(self, ctx: Context, queue: NotificationQueue, registry: Registry, refresh: Refresh, stop: Stop,
                 budget: float, clock: StoreClock, batch: int = 500) -> None:
        self.ctx, self.queue, self.registry, self.refresh, self.batch = ctx, queue, registry, refresh, batch
        self.clock = clock  # the deliveries' creation and due times
        self.stop, self.budget = stop, budget  # budget: seconds one subscription may spend matching one change
        self.seen = 0  # change seq this process has read up to (registry refreshed)
        self.checkpoint = 0  # changes up to here are matched (recorded, or caused nothing)
        self.durable = 0  # the checkpoint as stored
        self._durable_at = time.monotonic()
        self.behind = False  # the last pass read a full batch: more changes are waiting

    def start_at(self, checkpoint: int) -> None:
        self.seen = self.checkpoint = self.durable = checkpoint

    async def step(self) -> int:
        """One pass; the number of events and handshakes recorded (0 when idle or another process won)."""
        changes = await self.ctx.store.changes(self.seen, self.batch)
        self.behind = len(changes) == self.batch
        if not changes:
            return 0
        handshakes = []
        events: list[NewEvent] = []
        todo = [change for change in changes if change.seq > self.checkpoint]
        for change in changes:  # in order: a write is matched against the subscriptions as they were then
            new = change.seq > self.checkpoint
            if change.type == "Subscription":
                needed = await self.refresh(change)
                if needed is not None and new:
                    handshakes.append(needed)
            if new:
                events.extend(await self.match(change))
        if todo:
            upto = todo[-1].seq
            if events or handshakes or upto - self.durable >= _LAZY_CHANGES or \
                    time.monotonic() - self._durable_at >= _LAZY_SECONDS:
                if not await self.queue.enqueue(self.durable, upto, events, handshakes, self.clock.now()):
                    # another dispatcher recorded (part of) this: go on from where it got to
                    self.checkpoint = self.durable = await self.queue.checkpoint()
                    self.seen = min(self.seen, self.checkpoint)
                    self._durable_at = time.monotonic()
                    return 0
                self.durable, self._durable_at = upto, time.monotonic()
            self.checkpoint = upto
        self.seen = changes[-1].seq
        return len(events) + len(handshakes)

    async def flush(self) -> None:
        """Store the in-memory checkpoint (at shutdown), unless another process moved it meanwhile."""
        if self.checkpoint > self.durable and await self.queue.enqueue(self.durable, self.checkpoint, (), (),
                                                                                      self.clock.now()):
            self.durable = self.checkpoint

    async def match(self, change: Change) -> list[NewEvent]:
        """The events `change` causes."""
        index = self.registry.index(change.type)
        if index is None:
            return []
        current = previous = None
        if change.interaction != "delete":
            current = await self._body(change.type, change.id, change.version_id)
        if (change.interaction == "delete" or index.needs_previous) and change.version_id > 1:
            previous = await self._body(change.type, change.id, change.version_id - 1)
        subject = current if current is not None else previous
        if subject is None:
            return []
        prepared = Prepared(index_entries(self.ctx, subject), change.type, change.id)
        events = []
        for target in index.candidates(prepared):
            subscription = target.subscription
            if change.seq <= self.registry.since(subscription.id) or subscription.expired(change.last_updated) \
                    or not self._topic_fires(target, change, previous, current):
                continue
            if await self._matches(target, prepared) and self._visible(subscription, change, subject):
                deliver = subscription.channel.type == "rest-hook" and subscription.status in ("requested", "active")
                events.append(NewEvent(subscription.id, change.seq, change.type, change.id, change.version_id,
                                       change.interaction, change.last_updated, deliver))
        return events

    def _visible(self, subscription: Subscription, change: Change, subject: dict) -> bool:
        """Whether the subscription's owner may read what changed (a subscription matches nothing else)."""
        if subscription.owner is None:
            return True
        version = Version(change.type, change.id, change.version_id, change.last_updated, False,
                          fhir_json.dumps(subject))
        request = Request("vread", subscription.caller, change.type, change.id, version_id=str(change.version_id))
        return self.ctx.policy.after(request, version) is not None

    @staticmethod
    def _topic_fires(target: Target, change: Change, previous: Any, current: Any) -> bool:
        topic = target.subscription.topic
        if topic is None:
            return True
        if change.interaction not in topic.interactions:
            return False
        return topic.trigger is None or topic.trigger(previous, current)

    async def _matches(self, target: Target, prepared: Prepared) -> bool:
        """Whether the change matches; a subscription whose matching fails or overruns the budget is stopped."""
        try:
            if target.reads:
                held = await self._within_budget(target, prepared)
            else:  # in memory: microseconds (the search limits bound the criteria), nothing to wait on
                held = await self._all_hold(target, prepared)
        except Exception as error:  # a failing store read, a bug in the matcher: this subscription's, not everyone's
            what = f"matching {prepared.resource_type}/{prepared.resource_id}"
            log.exception("Subscription/%s: %s failed", target.subscription.id, what)
            detail = error.diagnostics if isinstance(error, FhirError) else f"{error.__class__.__name__}: {error}"
            await self._stop(target, f"{what} failed: {detail}")
            return False
        if held is None:
            await self._stop(target, f"matching {prepared.resource_type}/{prepared.resource_id} took longer than "
                                     f"HEARTH_SUBSCRIPTION_MATCH_TIMEOUT ({self.budget:g} s)")
            return False
        return held

    async def _within_budget(self, target: Target, prepared: Prepared) -> bool | None:
        """`_all_hold` for criteria that read the store; None past the budget (work that never waits cannot be
        interrupted: an overrun is also noticed after the fact)."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.budget):
                held = await self._all_hold(target, prepared)
        except TimeoutError:
            return None
        return held if time.monotonic() - started <= self.budget else None

    async def _stop(self, target: Target, reason: str) -> None:
        subscription = target.subscription
        # out of matching at once (the rest of this pass too), then recorded; the stored version confirms it
        self.registry.put(replace(subscription, status="error", matching_stopped=True))
        await self.stop(subscription.id,
                        f"{MATCHING_STOPPED}{reason}; correct the criteria and update the Subscription")

    async def _all_hold(self, target: Target, prepared: Prepared) -> bool:
        for filter_ in target.filters:
            matcher = filter_.matcher
            if matcher.needs_resolver:
                if not await matcher.evaluate(prepared, resolver=exists_for(self.ctx, target.subscription.caller)):
                    return False
            elif not matcher(prepared):
                return False
        return True

    async def _body(self, resource_type: str, resource_id: str, version_id: int) -> dict | None:
        version = await self.ctx.store.vread(resource_type, resource_id, version_id)
        if version is None or version.deleted:
            return None
        try:
            return fhir_json.loads(version.body)
        except (ValueError, FhirError):
            log.exception("unreadable body of %s/%s/_history/%s", resource_type, resource_id, version_id)
            return None
