"""`Forwarded` (RFC 7239) and `X-Forwarded-For/-Proto/-Host`, believed only from trusted proxies (pure ASGI).

Anyone can send these headers, so they are read only when the peer is one of HEARTH_TRUSTED_PROXIES, and then
hop by hop from the nearest proxy outwards, for as long as each hop came from a trusted proxy too. What they
say replaces the request's client address, scheme and Host (which server/hosts.py then checks).
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 192.0.2.7, ::1` -> networks (a bare address is a network of one); ValueError if malformed."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in a `for=` node (`192.0.2.1`, `192.0.2.1:80`, `[2001:db8::1]:80`); None for obfuscated ones."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in value.split(",")] if value else []


def _forwarded_hops(value: str) -> list[dict[str, str]]:
    """`for=1.2.3.4;proto=https, for=5.6.7.8` -> one dict per hop, client-most first."""
    hops = []
    for element in value.split(","):
        pairs = {}
        for pair in element.split(";"):
            key, _, text = pair.partition("=")
            if key.strip():
                pairs[key.strip().lower()] = text.strip().strip('"')
        hops.append(pairs)
    return hops


def _x_forwarded_hops(fors: list[str], protos: list[str], hosts: list[str]) -> list[dict[str, str]]:
    """X-Forwarded-For's hops; a proto or host list as long as it is per hop, else its last value is the
    nearest hop's."""
    hops: list[dict[str, str]] = [{"for": address} for address in fors]
    for key, values in (("proto", protos), ("host", hosts)):
        if len(values) == len(hops):
            for hop, value in zip(hops, values):
                hop[key] = value
        elif values and hops:
            hops[-1][key] = values[-1]
    return hops


class ProxyHeaders:
    def __init__(self, app: ASGIApp, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def _is_trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and client \
                and self._is_trusted(_address(str(client[0]))):
            scope = self._forwarded(scope)
        await self.app(scope, receive, send)

    def _forwarded(self, scope: Scope) -> Scope:
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        if "forwarded" in headers:
            hops = _forwarded_hops(headers["forwarded"])
        else:
            hops = _x_forwarded_hops(_split(headers.get("x-forwarded-for")), _split(headers.get("x-forwarded-proto")),
                                     _split(headers.get("x-forwarded-host")))
        client, scheme, host = scope["client"], scope.get("scheme", "http"), headers.get("host", "")
        while hops:  # the peer is trusted: believe its hop, then go on while the hop's sender is trusted too
            hop = hops.pop()
            address = _address(hop.get("for", ""))
            if address is not None:
                client = (str(address), 0)
            if hop.get("proto", "").lower() in ("http", "https"):
                scheme = hop["proto"].lower()
            if hop.get("host"):
                host = hop["host"]
            if not self._is_trusted(address):
                break
        rest = [(key, value) for key, value in scope["headers"] if key != b"host"]
        return {**scope, "client": client, "scheme": scheme, "headers": [(b"host", host.encode("latin-1")), *rest]}
