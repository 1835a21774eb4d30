"""What every write of a Subscription passes, whichever way it comes (REST, a Bundle entry, a conditional update,
a PATCH, `hearth import`): a write hook (interactions/context.py).

Its criteria, topic and channel are checked (a 422 OperationOutcome, nothing stored, when Hearth could not serve
it), and one a client writes gets the status it starts with: R4 subscriptions are active once accepted; backport
rest-hook subscriptions stay `requested` until their handshake is delivered; `off` stays off; a client's write
clears `error`. Statuses Hearth records itself (active after a handshake; error, also for a subscription it can no
longer accept) are stored as written. A rest-hook endpoint whose host name resolves now to an address the egress
policy refuses is refused before the commit.

A client's Subscription records who owns it (the owner extension, subscriptions/model.py): the grant of the token
that wrote it, which its matching and notifications are held to. Only Hearth sets it: whatever a client writes
there is replaced.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from aiohttp.abc import AbstractResolver

from hearth.capability import fhir_json
from hearth.interactions.context import Context, WriteHook
from hearth.interactions.request import Caller
from hearth.storage.base import Write
from hearth.subscriptions.channels import endpoint_url, refused
from hearth.subscriptions.config import SubscriptionConfig
from hearth.subscriptions.model import Subscription, parse_subscription, with_owner


class Acceptance(WriteHook):
    types = frozenset({"Subscription"})

    def __init__(self, config: Callable[[], SubscriptionConfig]) -> None:
        self._config = config  # the service's, read when needed (tests replace it before start-up)
        self._resolver: AbstractResolver | None = None

    @property
    def config(self) -> SubscriptionConfig:
        return self._config()

    def prepare(self, ctx: Context, caller: Caller, resource_type: str, resource: dict[str, Any],
                previous: int) -> dict[str, Any]:
        identified = {**resource, "id": resource.get("id", "")}  # a create's id is given after the hooks
        if caller.kind == "system":
            if resource.get("status") != "error":  # one in error runs nothing: it need not be servable
                parse_subscription(ctx, identified, previous + 1, self.config.egress)
            return resource
        resource = with_owner(resource, caller.grant)
        identified = {**resource, "id": resource.get("id", "")}
        subscription = parse_subscription(ctx, identified, previous + 1, self.config.egress)
        status = resource["status"]
        if status != "off":
            handshake = subscription.backport and subscription.channel.type == "rest-hook"
            status = "requested" if handshake else "active"
        accepted = {**resource, "status": status}
        accepted.pop("error", None)
        return accepted

    async def check(self, ctx: Context, writes: Sequence[Write]) -> None:
        for write in writes:
            if write.type != "Subscription" or write.body is None:
                continue
            resource = fhir_json.loads(write.body, trusted=True)
            if resource.get("status") in ("requested", "active"):
                await self.check_resolved(parse_subscription(ctx, resource, write.version_id, self.config.egress))

    async def check_resolved(self, subscription: Subscription) -> None:
        """422 when the rest-hook endpoint's host name resolves, now, to an address the egress policy refuses."""
        endpoint = subscription.channel.endpoint
        if subscription.channel.type != "rest-hook" or endpoint is None:
            return
        if self._resolver is None:
            self._resolver = self.config.resolver()
        refusal = await self.config.egress.resolved_refusal(endpoint_url(endpoint), self._resolver)
        if refusal:
            raise refused(endpoint, refusal)

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None
