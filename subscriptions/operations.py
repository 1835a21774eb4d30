"""`$status`, `$events` and `$get-ws-binding-token` (Backport IG), for backport and R4 subscriptions alike.

`GET [base]/Subscription/[id]/$status` (or `Subscription/$status?id=…`): a searchset Bundle of
SubscriptionStatus Parameters (type query-status). `GET [base]/Subscription/[id]/$events
?eventsSinceNumber=&eventsUntilNumber=&content=`: a history Bundle (type query-event) with the recorded
events, whether or not they were delivered, so a receiver that missed some fetches them again.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson

from hearth.capability.outcome import FhirError
from hearth.interactions.bundles import bundle, entry
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Outcome, Request
from hearth.subscriptions import notifications
from hearth.subscriptions.channels import CONTENTS
from hearth.subscriptions.config import SubscriptionConfig
from hearth.subscriptions.model import Subscription, parse_subscription
from hearth.subscriptions.queue import NotificationQueue
from hearth.subscriptions.registry import Registry
from hearth.subscriptions.websocket import WebSocketHub


class SubscriptionService(Protocol):
    """What the operations use of the running service (subscriptions/service.py)."""

    config: SubscriptionConfig
    registry: Registry
    queue: NotificationQueue
    websockets: WebSocketHub


async def _subscription(service: SubscriptionService, ctx: Context, request: Request,
                        subscription_id: str) -> tuple[Subscription, dict[str, Any]]:
    """The subscription as the registry has it, and its stored resource, read for the operation's caller (404 /
    410 as for a read)."""
    read = Request("read", request.caller, "Subscription", subscription_id)
    version = (await dispatch(ctx, read)).version
    assert version is not None
    resource = orjson.loads(version.body)
    subscription = service.registry.get(subscription_id)
    if subscription is None or subscription.version_id != version.version_id:  # the registry is a moment behind
        subscription = parse_subscription(ctx, resource, version.version_id, service.config.egress)
    return subscription, resource


async def status(service: SubscriptionService, ctx: Context, request: Request) -> Outcome:
    """`Subscription/[id]/$status` or `Subscription/$status?id=…`."""
    subscription_ids = [request.id] if request.id else [value for name, value in request.params if name == "id"]
    if not subscription_ids:
        raise FhirError(400, "required", "$status needs a subscription: Subscription/[id]/$status or ?id=")
    queue = service.queue
    entries = []
    for subscription_id in subscription_ids:
        subscription, resource = await _subscription(service, ctx, request, subscription_id)
        stored = replace(subscription, status=resource.get("status", subscription.status))
        parameters = notifications.status_parameters(ctx.base_url, stored, "query-status",
                                                     await queue.event_count(subscription_id),
                                                     error=resource.get("error"))
        entries.append(entry(f"urn:uuid:{parameters['id']}", orjson.dumps(parameters),
                             search={"mode": "match"}))
    return Outcome(body=bundle("searchset", entries, len(entries)))


def _number(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise FhirError(400, "invalid", f"{name} must be a whole number, not '{value}'")
    return int(value)


async def events(service: SubscriptionService, ctx: Context, request: Request) -> Outcome:
    """`Subscription/[id]/$events?eventsSinceNumber=&eventsUntilNumber=&content=`."""
    subscription_id, params = _instance(request), dict(request.params)
    subscription, _ = await _subscription(service, ctx, request, subscription_id)
    queue = service.queue
    count = await queue.event_count(subscription_id)
    first = _number(params, "eventsSinceNumber") or 1
    last = _number(params, "eventsUntilNumber")
    content = params.get("content") or subscription.channel.content
    if content not in CONTENTS:
        raise FhirError(400, "invalid", f"content must be one of {', '.join(CONTENTS)}")
    found = await queue.events(subscription_id, first, last, ctx.max_count)
    shown = replace(subscription, channel=replace(subscription.channel, content=content))
    return Outcome(body=await notifications.status_bundle(ctx, shown, "query-event", count, found))


async def binding_token(service: SubscriptionService, ctx: Context, request: Request) -> Outcome:
    """`Subscription/[id]/$get-ws-binding-token`: a token for `bind-with-token` on the websocket."""
    subscription_id = _instance(request)
    subscription, _ = await _subscription(service, ctx, request, subscription_id)
    if subscription.channel.type != "websocket":
        raise FhirError(422, "invalid", f"Subscription/{subscription_id} does not use the websocket channel")
    hub = service.websockets
    token, expires = await hub.binding_token(subscription_id)
    expiration = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Outcome(body=orjson.dumps({"resourceType": "Parameters", "parameter": [
        {"name": "token", "valueString": token},
        {"name": "expiration", "valueDateTime": expiration},
        {"name": "subscription", "valueString": subscription_id},
        {"name": "websocket-url", "valueUrl": hub.websocket_url()},
    ]}))


def _instance(request: Request) -> str:
    if not request.id:
        raise FhirError(400, "required", f"{request.operation} is an operation on one Subscription: "
                                         f"Subscription/[id]/{request.operation}")
    return request.id
