"""Notification bodies: R4 rest-hook requests, and backport `history` Bundles led by a SubscriptionStatus.

R4 has no SubscriptionStatus resource: the backport IG carries it as a Parameters resource
(profile backport-subscription-status-r4) in the first entry of the Bundle, with the subscription, its
topic and status, the notification type, `events-since-subscription-start` and one `notification-event`
per event (its number, timestamp and focus). Focus resources follow as entries for `full-resource`
(the stored bytes of the version that caused the event) and as bare entries for `id-only`.
"""

from __future__ import annotations

import uuid
from typing import Any, Sequence

import orjson

from interactions.bundles import bundle, entry
from interactions.context import Context
from storage.clock import to_instant, utc_now
from subscriptions.channels import Outgoing
from subscriptions.model import BACKPORT, Subscription
from subscriptions.queue import Event

STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"

_METHOD = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


def status_parameters(base_url: str, subscription: Subscription, kind: str, events_since_start: int,
                      events: Sequence[Event] = (), error: str | None = None) -> dict[str, Any]:
    """The SubscriptionStatus (as Parameters). `kind`: handshake | heartbeat | event-notification |
    query-status | query-event."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{subscription.id}"}},
    ]
    if subscription.topic_url:
        parameters.append({"name": "topic", "valueCanonical": subscription.topic_url})
    parameters += [
        {"name": "status", "valueCode": subscription.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        part = [{"name": "event-number", "valueString": str(event.number)},
                {"name": "timestamp", "valueInstant": to_instant(event.timestamp)}]
        if subscription.channel.content != "empty":
            part.append({"name": "focus", "valueReference": {
                "reference": f"{base_url}/{event.type}/{event.id}/_history/{event.version_id}"}})
        parameters.append({"name": "notification-event", "part": part})
    if error:
        parameters.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return {"resourceType": "Parameters", "id": str(uuid.uuid4()), "meta": {"profile": [STATUS_PROFILE]},
            "parameter": parameters}


async def status_bundle(ctx: Context, subscription: Subscription, kind: str, events_since_start: int,
                        events: Sequence[Event] = (), bundle_type: str = "history", error: str | None = None) -> bytes:
    """A notification (or `$events` answer): the SubscriptionStatus, then the events' focus resources."""
    status = status_parameters(ctx.base_url, subscription, kind, events_since_start, events, error)
    entries = [entry(f"urn:uuid:{status['id']}", orjson.dumps(status),
                     request={"method": "GET", "url": f"{ctx.base_url}/Subscription/{subscription.id}/$status"},
                     response={"status": "200"})]
    if subscription.channel.content != "empty":
        for event in events:
            entries.append(await _focus_entry(ctx, event, subscription.channel.content == "full-resource"))
    return _with_timestamp(bundle(bundle_type, entries))


async def _focus_entry(ctx: Context, event: Event, full: bool) -> bytes:
    method, status = _METHOD.get(event.interaction, ("PUT", "200"))
    url = event.type if method == "POST" else f"{event.type}/{event.id}"
    body = None
    if full and event.interaction != "delete":
        version = await ctx.store.vread(event.type, event.id, event.version_id)
        body = version.body if version is not None and not version.deleted else None
    return entry(f"{ctx.base_url}/{event.type}/{event.id}", body, request={"method": method, "url": url},
                 response={"status": status, "etag": f'W/"{event.version_id}"',
                           "lastModified": to_instant(event.timestamp)})


def _with_timestamp(body: bytes) -> bytes:
    """The Bundle with `timestamp` (when the notification was made) as its last member."""
    return body[:-1] + b',"timestamp":' + orjson.dumps(to_instant(utc_now())) + b"}"


async def r4_outgoing(ctx: Context, subscription: Subscription, event: Event) -> Outgoing:
    """R4 rest-hook: an empty POST to the endpoint; with a payload, `PUT [endpoint]/Type/id` with the
    resource (the endpoint is then a FHIR base), or `DELETE [endpoint]/Type/id` for a delete."""
    endpoint = subscription.channel.endpoint or ""
    if subscription.channel.payload is None:
        return Outgoing("POST", endpoint, None)
    url = f"{endpoint.rstrip('/')}/{event.type}/{event.id}"
    if event.interaction == "delete":
        return Outgoing("DELETE", url, None)
    version = await ctx.store.vread(event.type, event.id, event.version_id)
    if version is None or version.deleted:
        return Outgoing("DELETE", url, None)
    return Outgoing("PUT", url, version.body)


async def backport_outgoing(ctx: Context, subscription: Subscription, kind: str, events_since_start: int,
                            events: Sequence[Event] = ()) -> Outgoing:
    body = await status_bundle(ctx, subscription, kind, events_since_start, events)
    return Outgoing("POST", subscription.channel.endpoint or "", body)

