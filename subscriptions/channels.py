"""Channels: checking `Subscription.channel`, and sending a notification over a rest-hook.

rest-hook: an http(s) `endpoint` (its host in HEARTH_SUBSCRIPTION_ALLOWED_HOSTS when that is set),
`header[]` lines (`Name: value`) sent with every notification, `payload` empty or application/fhir+json.
websocket: no endpoint; clients bind to the subscription over Hearth's websocket (subscriptions/websocket.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from capability.outcome import FhirError

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


def parse_channel(channel: dict[str, Any], backport: bool, content: str | None,
                  allowed_hosts: frozenset[str]) -> Channel:
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
        endpoint = _check_endpoint(endpoint, allowed_hosts)
    headers = tuple(_header(line) for line in channel.get("header") or ())
    return Channel(channel_type, endpoint, headers, payload, content)


def _check_endpoint(endpoint: Any, allowed_hosts: frozenset[str]) -> str:
    if not isinstance(endpoint, str) or not endpoint:
        raise _bad("A rest-hook channel needs an endpoint", "endpoint")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad(f"Endpoint '{endpoint}' must be an http or https URL", "endpoint")
    if allowed_hosts and parts.hostname.lower() not in allowed_hosts:
        raise _bad(f"Endpoint host '{parts.hostname}' is not in the allowed hosts "
                   "(HEARTH_SUBSCRIPTION_ALLOWED_HOSTS)", "endpoint")
    return endpoint


def _header(line: Any) -> tuple[str, str]:
    name, colon, value = str(line).partition(":")
    if not colon or not name.strip() or any(c in line for c in "\r\n"):
        raise _bad(f"Header '{line}' must look like 'Name: value'", "header")
    return name.strip(), value.strip()


async def send(session: aiohttp.ClientSession, channel: Channel, outgoing: Outgoing, timeout: float) -> None:
    """POST/PUT the notification; DeliveryFailed unless the endpoint answers 2xx within `timeout`."""
    headers = dict(channel.headers)
    if outgoing.body is not None:
        headers["Content-Type"] = "application/fhir+json"
    try:
        async with session.request(outgoing.method, outgoing.url, data=outgoing.body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as response:
            await response.read()
            if not 200 <= response.status < 300:
                raise DeliveryFailed(f"{outgoing.method} {outgoing.url} answered {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryFailed(f"{outgoing.method} {outgoing.url} failed: {exc.__class__.__name__} {exc}") from None
