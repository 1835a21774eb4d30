"""The subscription service: started and stopped with the app; owns the registry, dispatcher, sender.

Subscriptions are ordinary resources written through the interactions. A REST create/update of a
Subscription first goes through `accept`: the criteria, topic and channel are checked (a 422
OperationOutcome, nothing stored, when they are wrong) and the status is set: R4 subscriptions are
active once accepted; backport rest-hook subscriptions stay `requested` until their handshake is
delivered. Status changes Hearth makes itself (active after a handshake, error after the retry horizon, after
matching failed or overran its budget, or for a stored subscription this process can no longer accept) are
ordinary updates too (If-Match, retried on a concurrent change).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import aiohttp

from capability import fhir_json
from capability.outcome import FhirError
from interactions import crud
from interactions.context import Context
from interactions.resources import parse_body
from storage import notification_queue
from storage.base import Change, Version, Write
from subscriptions.channels import endpoint_url, refused
from subscriptions.delivery import Deliverer, DeliveryConfig
from subscriptions.dispatcher import Dispatcher
from subscriptions.egress import EgressPolicy, ResolverFactory
from subscriptions.model import Subscription, parse_subscription
from subscriptions.owners import is_gone, new_owner
from subscriptions.registry import Registry
from subscriptions.wake import sleep_until_set
from subscriptions.websocket import WebSocketHub

log = logging.getLogger("hearth.subscriptions")


@dataclass(frozen=True)
class SubscriptionConfig:
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # where rest-hook endpoints may point
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    match_timeout: float = 1.0  # seconds one subscription may spend matching one change
    resolver: ResolverFactory = aiohttp.DefaultResolver  # how endpoint names are resolved (tests inject theirs)
    poll: float = 0.02  # seconds at least between two looks at the change log (passes gather what came meanwhile)
    # seconds at most between two looks when no commit of this process woke the dispatcher: what other processes
    # write to the same database (`hearth import`, another server on MongoDB) is seen within this time
    idle_poll: float = 1.0

    @classmethod
    def from_settings(cls, settings: Any) -> SubscriptionConfig:
        delivery = DeliveryConfig(retry_horizon=float(settings.subscription_retry_horizon) * 3600,
                                  retry_base=float(settings.subscription_retry_base))
        return cls(EgressPolicy.from_settings(settings), delivery, float(settings.subscription_match_timeout))


def running(ctx: Context) -> SubscriptionService:
    """The subscription service of this context; 503 when it is not running."""
    service = ctx.extras.get("subscriptions")
    if service is None:
        raise FhirError(503, "transient", "Subscriptions are not running")
    return service


async def accept(ctx: Context, body: bytes | dict[str, Any]) -> dict[str, Any]:
    """Check a Subscription a client writes and set the status it starts with (see the module doc)."""
    resource, _ = await parse_body(ctx, body, "Subscription")
    service = running(ctx)
    subscription = parse_subscription(ctx, {**resource, "id": resource.get("id", "")}, 0, service.config.egress)
    await service.check_resolved(subscription)
    status = resource["status"]
    if status != "off":
        handshake = subscription.backport and subscription.channel.type == "rest-hook"
        status = "requested" if handshake else "active"
    accepted = {**resource, "status": status}
    accepted.pop("error", None)
    return accepted


class SubscriptionService:
    def __init__(self, config: SubscriptionConfig) -> None:
        self.config = config
        self.registry = Registry()
        self.owner = new_owner()  # this process, for leases
        self.ctx: Context | None = None
        self._tasks: list[asyncio.Task] = []
        self._changed = asyncio.Event()  # set by every commit of this process

    async def start(self, ctx: Context) -> None:
        self.ctx = ctx
        ctx.write_checks.append(self.check_writes)
        ctx.commit_listeners.append(self._committed)
        self.queue = notification_queue(ctx.store)
        await self.queue.open()
        self.resolver = self.config.resolver()
        self.dispatcher = Dispatcher(ctx, self.queue, self.registry, self._refresh, self._stop,
                                     self.config.match_timeout)
        self.deliverer = Deliverer(ctx, self.queue, self.registry, self.config.delivery, self.owner, self.set_status,
                                   self.config.egress, self.resolver)
        self.websockets = WebSocketHub(ctx, self.queue, self.registry)
        await self._release_gone_owners()
        await self._load()
        self.dispatcher.start_at(await self.queue.checkpoint())
        ctx.extras["subscriptions"] = self
        self._tasks = [asyncio.create_task(self._dispatch_forever(), name="hearth-subscription-dispatcher"),
                       asyncio.create_task(self.deliverer.run(), name="hearth-subscription-delivery"),
                       asyncio.create_task(self._heartbeats(), name="hearth-subscription-heartbeats")]

    async def stop(self) -> None:
        if self.ctx is not None and self.check_writes in self.ctx.write_checks:
            self.ctx.write_checks.remove(self.check_writes)
        if self.ctx is not None and self._committed in self.ctx.commit_listeners:
            self.ctx.commit_listeners.remove(self._committed)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._tasks:
            await self.dispatcher.flush()
            await self.resolver.close()
        self._tasks = []

    async def _release_gone_owners(self) -> None:
        """Claims of processes of this machine that no longer run (a predecessor killed mid-delivery) are
        released at once, instead of after their lease."""
        for owner in await self.queue.lease_owners(time.time()):
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

    # -- loops -------------------------------------------------------------------------------------

    def _committed(self, changes: Sequence[Change]) -> None:
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
            now = time.time()
            for subscription in self.registry:
                if not (subscription.heartbeat and subscription.status == "active"
                        and subscription.channel.type == "rest-hook"):
                    continue
                last = self.deliverer.last_sent.setdefault(subscription.id, now)
                if now - last >= subscription.heartbeat:
                    self.deliverer.last_sent[subscription.id] = now
                    await self.queue.add_delivery(subscription.id, "heartbeat")
                    self.deliverer.wake.set()

    # -- status ------------------------------------------------------------------------------------

    async def check_resolved(self, subscription: Subscription) -> None:
        """422 when the rest-hook endpoint's host name resolves, now, to an address the egress policy refuses."""
        endpoint = subscription.channel.endpoint
        if subscription.channel.type != "rest-hook" or endpoint is None:
            return
        refusal = await self.config.egress.resolved_refusal(endpoint_url(endpoint), self.resolver)
        if refusal:
            raise refused(endpoint, refusal)

    def check_writes(self, ctx: Context, writes: Sequence[Write]) -> None:
        """Refuse (422) a Subscription that Hearth could not serve, whichever way it is written (a Bundle entry, a
        conditional update, a PATCH): the same checks as `accept`, which direct creates and updates pass first.
        One in `error` runs nothing, so it is not checked: Hearth records that status also for a subscription it
        can no longer accept, and a client's create or update makes it requested or active (checked) again."""
        for write in writes:
            if write.type == "Subscription" and write.body is not None:
                resource = fhir_json.loads(write.body)
                if resource.get("status") != "error":
                    parse_subscription(ctx, resource, write.version_id, self.config.egress)

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
                await crud.update(self.ctx, "Subscription", subscription_id, resource, current.version_id)
                return
            except FhirError as conflict:
                if conflict.status != 412:
                    raise
        log.warning("Subscription/%s: could not record status %s", subscription_id, status)
