"""Which Host a request may name: the public base URL's, and those the operator adds (pure ASGI middleware).

A server bound to 127.0.0.1 is still reachable from a browser page through DNS rebinding (a name the attacker
controls resolving to 127.0.0.1): the request then carries the attacker's name in its Host header. Refusing
hosts Hearth does not serve closes that door. Starlette's TrustedHostMiddleware does the same check but answers
in plain text; every error Hearth gives is an OperationOutcome.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from hearth.capability.outcome import FhirError
from hearth.server import http

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(host: str) -> str:
    """`Example.org:8080` -> `example.org`; `[::1]:8080` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def allowed_hosts(base_url: str, extra: str) -> frozenset[str] | None:
    """The host names requests may carry (None: any, when `extra` holds `*`): the base URL's host, the
    loopback names too when that host is one of them, and the comma-separated `extra`."""
    names = {host_name(name) for name in extra.split(",") if name.strip()}
    if "*" in names:
        return None
    base = urlsplit(base_url).hostname or ""
    names.add(base)
    if base in LOOPBACK_NAMES:
        names |= LOOPBACK_NAMES
    return frozenset(names)


class TrustedHosts:
    """Refuse (400, an OperationOutcome) HTTP requests and websockets whose Host is not one of `hosts`."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hosts is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((value.decode("latin-1") for key, value in scope["headers"] if key == b"host"), "")
        if host_name(host) in self.hosts:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        shown = host or "none"
        error = FhirError(400, "security", f"Host '{shown[:200]}' is not served here; Hearth answers for "
                                           f"{', '.join(sorted(self.hosts))} (HEARTH_BASE_URL, HEARTH_ALLOWED_HOSTS)")
        await http.error_response(error)(scope, receive, send)
