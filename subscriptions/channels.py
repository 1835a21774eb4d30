"""Channels: checking `Subscription.channel`, and sending a notification over a rest-hook.

rest-hook: an http(s) `endpoint` that the egress policy allows (subscriptions/egress.py: its host in
HEARTH_SUBSCRIPTION_ALLOWED_HOSTS when that is set, no private or loopback address, not Hearth), `header[]`
lines (`Name: value`) sent with every notification, `payload` empty or application/fhir+json.
websocket: no endpoint; clients bind to the subscription over Hearth's websocket (subscriptions/websocket.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from hearth.capability.outcome import FhirError
from hearth.subscriptions.egress import EgressPolicy

CHANNEL_TYPES = ("rest-hook", "websocket")
PAYLOAD_TYPES = ("application/fhir+json", "application/json", "application/json+fhir")
CONTENTS = ("empty", "id-only", "full-resource")


@dataclass(frozen=True, slots=True)
class Channel:
    type: str
    endpoint: str | None
    headers: tuple[tuple[str, str], ...]
    payload: str | None  # the MIME type; None: empty notifications
    content: str  # empty | id-only | full-resource (R4: full-resource when there is a payload)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One HTTP request carrying a notification."""

    method: str
    url: str
    body: bytes | None


class DeliveryFailed(Exception):
    """The endpoint did not take the notification (connection error, timeout or non-2xx status)."""


def _bad(diagnostics: str, element: str) -> FhirError:
    return FhirError(422, "invalid", diagnostics, (f"Subscription.channel.{element}",))


def parse_channel(channel: dict[str, Any], backport: bool, content: str | None, egress: EgressPolicy) -> Channel:
    channel_type = channel.get("type")
    if channel_type not in CHANNEL_TYPES:
        raise _bad(f"Channel type '{channel_type}' is not supported; use one of {', '.join(CHANNEL_TYPES)}", "type")
    payload = channel.get("payload") or None
    if payload is not None and payload.split(";")[0].strip() not in PAYLOAD_TYPES:
        raise _bad(f"Payload '{payload}' is not supported; use application/fhir+json or leave it out", "payload")
    if content is None:
        content = ("id-only" if backport else "full-resource") if payload else "empty"
    if content not in CONTENTS:
        raise _bad(f"Payload content '{content}' is not one of {', '.join(CONTENTS)}", "payload")
    if payload is None:
        content = "empty"
    endpoint = channel.get("endpoint")
    if channel_type == "rest-hook":
        endpoint = _check_endpoint(endpoint, egress)
    headers = tuple(_header(line) for line in channel.get("header") or ())
    return Channel(channel_type, endpoint, headers, payload, content)


def endpoint_url(endpoint: Any) -> URL:
    """The endpoint parsed as aiohttp will parse it (so the checks see the host it connects to)."""
    if not isinstance(endpoint, str) or not endpoint:
        raise _bad("A rest-hook channel needs an endpoint", "endpoint")
    try:
        url = URL(endpoint)
    except (ValueError, TypeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.raw_host:
        raise _bad(f"Endpoint '{endpoint}' must be an http or https URL", "endpoint")
    return url


def refused(endpoint: str, refusal: str) -> FhirError:
    return _bad(f"Endpoint '{endpoint}' is refused: {refusal}", "endpoint")


def _check_endpoint(endpoint: Any, egress: EgressPolicy) -> str:
    refusal = egress.url_refusal(endpoint_url(endpoint))
    if refusal:
        raise refused(endpoint, refusal)
    return endpoint


def _header(line: Any) -> tuple[str, str]:
    name, colon, value = str(line).partition(":")
    if not colon or not name.strip() or any(c in line for c in "\r\n"):
        raise _bad(f"Header '{line}' must look like 'Name: value'", "header")
    return name.strip(), value.strip()


async def send(session: aiohttp.ClientSession, egress: EgressPolicy, channel: Channel, outgoing: Outgoing,
               timeout: float) -> None:
    """POST/PUT the notification; DeliveryFailed unless the endpoint answers 2xx within `timeout`. The session
    resolves names through the egress policy's GuardedResolver; a literal address, which aiohttp connects to
    without resolving, is checked here on the very URL aiohttp is given. Redirects are not followed."""
    url = URL(outgoing.url)
    refusal = egress.url_refusal(url)
    if refusal:
        raise DeliveryFailed(f"{outgoing.method} {outgoing.url} refused: {refusal}")
    headers = dict(channel.headers)
    if outgoing.body is not None:
        headers["Content-Type"] = "application/fhir+json"
    try:
        async with session.request(outgoing.method, url, data=outgoing.body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"{outgoing.method} {outgoing.url} answered {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(f"{outgoing.method} {outgoing.url} failed: {exc.__class__.__name__} {exc}") from None
