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

from hearth.capability.outcome import FhirError
from hearth.interactions.bundles import bundle, entry
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Request
from hearth.storage.base import Version
from hearth.storage.clock import to_instant, utc_now
from hearth.subscriptions.channels import Outgoing
from hearth.subscriptions.model import BACKPORT, Subscription
from hearth.subscriptions.queue import Event

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
    """A notification (or `$events` answer): the SubscriptionStatus, then the events' focus resources (those the
    subscription may see)."""
    events = await shown(ctx, subscription, events)
    status = status_parameters(ctx.base_url, subscription, kind, events_since_start, [e for e, _ in events], error)
    entries = [entry(f"urn:uuid:{status['id']}", orjson.dumps(status),
                     request={"method": "GET", "url": f"{ctx.base_url}/Subscription/{subscription.id}/$status"},
                     response={"status": "200"})]
    if subscription.channel.content != "empty":
        full = subscription.channel.content == "full-resource"
        for event, version in events:
            entries.append(_focus_entry(ctx, event, version.body if full and version is not None else None))
    return _with_timestamp(bundle(bundle_type, entries))


async def shown(ctx: Context, subscription: Subscription, events: Sequence[Event]) -> list[tuple[Event, Version | None]]:
    """The events whose focus the subscription may see, each with the version it may see (None for a delete).
    The focus is read through the dispatcher on the subscription's behalf, so the policy decides, as for any read:
    an event whose resource it hides is left out of the notification altogether."""
    visible = []
    for event in events:
        request = Request("vread", subscription.caller, event.type, event.id,
                          version_id=str(event.version_id))
        try:
            visible.append((event, (await dispatch(ctx, request)).version))
        except FhirError as error:
            if error.status == 410:  # a delete: the tombstone, as the policy shows it
                tombstone = await ctx.store.vread(event.type, event.id, event.version_id)
                if tombstone is not None and ctx.policy.after(request, tombstone) is not None:
                    visible.append((event, None))
            elif error.status != 404:
                raise
    return visible


def _focus_entry(ctx: Context, event: Event, body: bytes | None) -> bytes:
    method, status = _METHOD.get(event.interaction, ("PUT", "200"))
    url = event.type if method == "POST" else f"{event.type}/{event.id}"
    return entry(f"{ctx.base_url}/{event.type}/{event.id}", body, request={"method": method, "url": url},
                 response={"status": status, "etag": f'W/"{event.version_id}"',
                           "lastModified": to_instant(event.timestamp)})


def _with_timestamp(body: bytes) -> bytes:
    """The Bundle with `timestamp` (when the notification was made) as its last member."""
    return body[:-1] + b',"timestamp":' + orjson.dumps(to_instant(utc_now())) + b"}"


async def r4_outgoing(ctx: Context, subscription: Subscription, event: Event) -> Outgoing | None:
    """R4 rest-hook: an empty POST to the endpoint; with a payload, `PUT [endpoint]/Type/id` with the
    resource (the endpoint is then a FHIR base), or `DELETE [endpoint]/Type/id` for a delete. None when the
    subscription may not see the resource: nothing is sent."""
    visible = await shown(ctx, subscription, [event])
    if not visible:
        return None
    endpoint = subscription.channel.endpoint or ""
    if subscription.channel.payload is None:
        return Outgoing("POST", endpoint, None)
    url = f"{endpoint.rstrip('/')}/{event.type}/{event.id}"
    version = visible[0][1]
    if version is None:
        return Outgoing("DELETE", url, None)
    return Outgoing("PUT", url, version.body)


async def backport_outgoing(ctx: Context, subscription: Subscription, kind: str, events_since_start: int,
                            events: Sequence[Event] = ()) -> Outgoing:
    body = await status_bundle(ctx, subscription, kind, events_since_start, events)
    return Outgoing("POST", subscription.channel.endpoint or "", body)

