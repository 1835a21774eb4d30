"""The subscription service: installed on a context (its write hooks, operations and CapabilityStatement part),
then started and stopped with the server; owns the registry, dispatcher, sender.

Subscriptions are ordinary resources written through the dispatcher; every write of one passes the acceptance
hook (subscriptions/acceptance.py). Status changes Hearth makes itself (active after a handshake, error after the
retry horizon, after matching failed or overran its budget, or for a stored subscription this process can no
longer accept) are ordinary updates by the system (If-Match, retried on a concurrent change).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Sequence

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions.context import Context, WriteHook
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import SYSTEM, Request
from hearth.storage import leases, notification_queue
from hearth.storage.base import Change, Version, Write
from hearth.storage.owners import is_gone, new_owner
from hearth.storage.store_clock import StoreClock
from hearth.subscriptions import operations
from hearth.subscriptions.acceptance import Acceptance
from hearth.subscriptions.config import SubscriptionConfig
from hearth.subscriptions.delivery import Deliverer
from hearth.subscriptions.dispatcher import Dispatcher
from hearth.subscriptions.model import Subscription, parse_subscription
from hearth.subscriptions.registry import Registry
from hearth.subscriptions.topics import topic_summary
from hearth.subscriptions.wake import sleep_until_set
from hearth.subscriptions.websocket import WebSocketHub

log = logging.getLogger("hearth.subscriptions")


class _Wake(WriteHook):
    """Told of every commit, so the dispatcher wakes on them instead of polling."""

    def __init__(self, service: SubscriptionService) -> None:
        self.service = service

    async def committed(self, ctx: Context, writes: Sequence[Write], changes: Sequence[Change]) -> None:
        self.service.committed(changes)


class _Follow(WriteHook):
    """Told of the Subscription changes of every process (interactions/follower.py)."""

    types = frozenset({"Subscription"})

    def __init__(self, service: SubscriptionService) -> None:
        self.service = service

    async def observed(self, ctx: Context, changes: Sequence[Change]) -> None:
        await self.service.observed(changes)


class SubscriptionService:
    def __init__(self, config: SubscriptionConfig) -> None:
        self.config = config
        self.registry = Registry()
        self.owner = new_owner()  # this process, for leases
        self.acceptance = Acceptance(lambda: self.config)
        self.ctx: Context | None = None
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()  # set by every commit of this process
        self._background = False  # this process matches and delivers (its dispatcher keeps the registry)

    def install(self, ctx: Context) -> None:
        """What every process writing to the store needs (the server, `hearth import`): Subscriptions checked
        on every write path, the operations, the topics in the CapabilityStatement."""
        self.ctx = ctx
        ctx.hooks += [self.acceptance, _Wake(self), _Follow(self)]
        for name, operation in (("$status", operations.status), ("$events", operations.events),
                                ("$get-ws-binding-token", operations.binding_token)):
            ctx.operations[("Subscription", name)] = partial(operation, self)
        ctx.capability_extras["subscription_topics"] = topic_summary()

    async def start(self, background: bool = True) -> None:
        """Serve the operations and websockets; with `background`, also match, deliver and send heartbeats (the
        server's part; `install` first). Without it, the group's leader does those (`lead`, server/leadership.py)."""
        ctx = self.ctx
        assert ctx is not None, "install the service on a context first"
        self.queue = notification_queue(ctx.store)
        await self.queue.open()
        self.websockets = WebSocketHub(ctx, self.queue, self.registry)
        self.clock = StoreClock(leases(ctx.store))  # deliveries are timed by the store's clock, as leases are
        if background:
            await self.lead()
        else:
            await self._load()

    async def lead(self) -> None:
        """Match, deliver and send heartbeats in this process, from the durable checkpoint on."""
        ctx = self.ctx
        assert ctx is not None
        self._background = True
        await self._load()  # what the follower had not applied yet, the dispatcher (from its checkpoint) would not
        await self.clock.sync()
        self.resolver = self.config.resolver()
        self.dispatcher = Dispatcher(ctx, self.queue, self.registry, self._refresh, self._stop,
                                     self.config.match_timeout, self.clock)
        self.deliverer = Deliverer(ctx, self.queue, self.registry, self.config.delivery, self.owner, self.set_status,
                                   self.config.egress, self.resolver, self.clock)
        await self._release_gone_owners()
        self.dispatcher.start_at(await self.queue.checkpoint())
        self._tasks = [asyncio.create_task(self._dispatch_forever(), name="hearth-subscription-dispatcher"),
                       asyncio.create_task(self.deliverer.run(), name="hearth-subscription-delivery"),
                       asyncio.create_task(self._heartbeats(), name="hearth-subscription-heartbeats")]

    async def step_down(self) -> None:
        """Stop matching and delivering here (another process leads now); the registry follows the change log."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:
            await self.dispatcher.flush()
            await self.resolver.close()
            await self.queue.release(self.owner)  # its claimed deliveries go to the next leader at once
        if self._background:
            self._background = False
            await self._load()  # what the dispatcher had not applied yet, the follower no longer will

    async def stop(self) -> None:
        await self.step_down()
        await self.acceptance.close()

    async def _release_gone_owners(self) -> None:
        """Claims of processes of this machine that no longer run (a predecessor killed mid-delivery) are
        released at once, instead of after their lease."""
        for owner in await self.queue.lease_owners(self.clock.now()):
            if is_gone(owner):
                log.info("releasing the delivery claims of %s, which no longer runs", owner)
                await self.queue.release(owner)

    # -- the registry ------------------------------------------------------------------------------

    async def _load(self) -> None:
        """Every stored subscription, from the Subscription history (newest first): the first version
        seen of each is its current one; each sees changes after its creation (the seq of the oldest
        version since its last delete) only, so a backlog replayed at start-up is matched as it was."""
        current: dict[str, Version] = {}
        created: dict[str, int] = {}
        closed: set[str] = set()  # ids whose creation is found (an older tombstone reached)
        before = None
        while True:
            page = await self.ctx.store.history("Subscription", None, None, before, 1000)
            for seq, version in page.entries:
                current.setdefault(version.id, version)
                if version.deleted:
                    closed.add(version.id)
                elif version.id not in closed:
                    created[version.id] = seq
            if len(page.entries) < 1000:
                break
            before = page.entries[-1][0]
        for subscription in list(self.registry):  # (loaded again: gone since)
            if subscription.id not in current or current[subscription.id].deleted:
                self.registry.remove(subscription.id)
        for subscription_id, version in current.items():
            if not version.deleted:
                await self._put(fhir_json.loads(version.body), version.version_id, created.get(subscription_id))

    async def _put(self, resource: dict[str, Any], version_id: int, since: int | None) -> Subscription | None:
        try:
            subscription = parse_subscription(self.ctx, resource, version_id, self.config.egress)
        except FhirError as error:  # stored unchecked (`hearth import`), or accepted before a limit or policy
            subscription_id = resource.get("id", "")
            self.registry.remove(subscription_id)
            if resource.get("status") in ("requested", "active"):
                await self._stop(subscription_id, f"No longer accepted: {error.diagnostics}; correct it and "
                                                  "update the Subscription")
            return None
        self.registry.put(subscription, since)
        return subscription

    async def _refresh(self, change: Change) -> tuple[str, int] | None:
        """A Subscription changed: reload it; (id, seq) when its handshake is due."""
        if change.interaction == "delete":
            self.registry.remove(change.id)
            await self.queue.drop(change.id)
            return None
        version = await self.ctx.store.vread("Subscription", change.id, change.version_id)
        if version is None:
            return None
        known = self.registry.get(change.id)
        subscription = await self._put(fhir_json.loads(version.body), version.version_id,
                                       change.seq if known is None else None)
        if subscription is None:
            return None
        if subscription.status in ("error", "off"):
            await self.queue.drop(change.id)
        elif known is not None and known.status == "error":  # the client says the endpoint works again
            self.deliverer.breakers.pop(subscription.channel.endpoint or "", None)
        handshake = subscription.backport and subscription.channel.type == "rest-hook"
        if not handshake or subscription.status != "requested":
            return None
        # decided from the log itself (the previous version), so a restart decides the same
        previous = await self.ctx.store.vread("Subscription", change.id, change.version_id - 1)
        if previous is not None and not previous.deleted and \
                fhir_json.loads(previous.body).get("status") == "requested":
            return None
        return subscription.id, change.seq

    async def observed(self, changes: Sequence[Change]) -> None:
        """Subscriptions written through any process, in a process that does not match (the websockets' registry);
        the matching process's dispatcher keeps its own from the same log, and alone changes their status."""
        if self._background:
            return
        for change in changes:
            version = await self.ctx.store.vread("Subscription", change.id, change.version_id)
            if version is None or version.deleted:
                self.registry.remove(change.id)
                continue
            try:
                subscription = parse_subscription(self.ctx, fhir_json.loads(version.body), version.version_id,
                                                  self.config.egress)
            except FhirError:
                self.registry.remove(change.id)
                continue
            self.registry.put(subscription, change.seq if self.registry.get(change.id) is None else None)

    # -- loops -------------------------------------------------------------------------------------

    def committed(self, changes: Sequence[Change]) -> None:
        # with no subscription nothing can fire: the idle pass moves the checkpoint on, so plain writes cost no
        # extra pass each (a Subscription write wakes the dispatcher, which then has one to match)
        if len(self.registry) or any(change.type == "Subscription" for change in changes):
            self._changed.set()

    async def _dispatch_forever(self) -> None:
        while True:
            self._changed.clear()  # before the pass: a commit during it wakes the next one
            try:
                recorded = await self.dispatcher.step()
            except Exception:
                log.exception("subscription dispatcher pass failed; retrying")
                await asyncio.sleep(1)
                continue
            if recorded:
                self.deliverer.wake.set()
                self.websockets.notify()
            elif not self.dispatcher.behind:
                await asyncio.sleep(self.config.poll)
                if not self._changed.is_set():  # idle: sleep until a commit here, or idle_poll for other writers
                    await sleep_until_set(self._changed, self.config.idle_poll)

    async def _heartbeats(self) -> None:
        """Backport rest-hook subscriptions with a heartbeat period get a heartbeat when idle that long."""
        while True:
            await asyncio.sleep(1)
            now = self.clock.now()
            for subscription in self.registry:
                if not (subscription.heartbeat and subscription.status == "active"
                        and subscription.channel.type == "rest-hook"):
                    continue
                last = self.deliverer.last_sent.setdefault(subscription.id, now)
                if now - last >= subscription.heartbeat:
                    self.deliverer.last_sent[subscription.id] = now
                    await self.queue.add_delivery(subscription.id, "heartbeat", now)
                    self.deliverer.wake.set()

    # -- status ------------------------------------------------------------------------------------

    async def _stop(self, subscription_id: str, error: str) -> None:
        """The subscription cannot run: status `error` with the reason (a failure to record it is only logged:
        the dispatcher must go on)."""
        log.warning("Subscription/%s: %s", subscription_id, error)
        try:
            await self.set_status(subscription_id, "error", error)
        except Exception:
            log.exception("Subscription/%s: could not record status error", subscription_id)

    async def set_status(self, subscription_id: str, status: str, error: str | None) -> None:
        """Write the subscription's new status (and error) unless someone changed it meanwhile."""
        for _ in range(10):
            current = await self.ctx.store.read("Subscription", subscription_id)
            if current is None or current.deleted:
                return
            resource = fhir_json.loads(current.body)
            if status == "active" and resource.get("status") != "requested":
                return  # turned off or re-requested meanwhile: the client's word wins
            if resource.get("status") == status and resource.get("error") == error:
                return  # recorded already (by another process, or before a restart)
            resource["status"] = status
            if error is None:
                resource.pop("error", None)
            else:
                resource["error"] = error
            try:
                await dispatch(self.ctx, Request("update", SYSTEM, "Subscription", subscription_id, body=resource,
                                                 if_match=current.version_id))
                return
            except FhirError as conflict:
                if conflict.status != 412:
                    raise
        log.warning("Subscription/%s: could not record status %s", subscription_id, status)
