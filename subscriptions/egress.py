"""Where rest-hook notifications may go: public addresses only (unless a setting allows a network), never Hearth.

An endpoint is a URL any client chooses, so it must not make Hearth call into the machine or the network it runs
in. An address is refused when it is loopback, private (RFC 1918, ULA), link-local, multicast, unspecified,
reserved, shared (CGNAT 100.64/10) or otherwise not globally routable, also when written as an IPv6 form that
carries such an IPv4 address (mapped, 6to4, NAT64); networks in HEARTH_SUBSCRIPTION_ALLOWED_NETWORKS are allowed
(on-premises receivers). Hearth's own base URL (scheme, host, port) and its listening address are refused always.

Numeric spellings (`2130706433`, `0x7f.1`, `127.1`) are read by the system's own parser (getaddrinfo with
AI_NUMERICHOST), so they mean what a connection would make of them. The checks:
- at create: literal addresses, then names resolved once (off the event loop, briefly; a name that does not
  resolve now is accepted);
- at send: the session's resolver drops refused addresses before aiohttp connects (`GuardedResolver`), so a
  name that resolved to a public address at create and resolves to 127.0.0.1 later (DNS rebinding) reaches
  nothing; a literal address, which aiohttp connects to without resolving, is checked on the URL aiohttp uses.
Redirects are never followed (channels.send).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ResolverFactory = Callable[[], AbstractResolver]  # made once the event loop runs (aiohttp's want one)

ALLOWED_NETWORKS = "HEARTH_SUBSCRIPTION_ALLOWED_NETWORKS"
RESOLVE_SECONDS = 2.0  # at create; a name that takes longer is accepted (the check at send guards it)

_DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def numeric_addresses(host: str) -> list[Address] | None:
    """The addresses a numeric host (any spelling the system accepts) stands for; None for a name."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError):
        return None
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def _embedded(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches (IPv4-mapped, 6to4, NAT64), if any."""
    if address.version == 4:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _kind(address: Address) -> str | None:
    """Why a connection to `address` is refused by default (None: a public address)."""
    for kind, test in (("an unspecified", address.is_unspecified), ("a loopback", address.is_loopback),
                       ("a link-local", address.is_link_local), ("a multicast", address.is_multicast),
                       ("a shared (CGNAT)", address in _SHARED), ("a private", address.is_private),
                       ("a reserved", address.is_reserved),
                       ("a site-local", address.version == 6 and address.is_site_local),
                       ("a non-public", not address.is_global)):
        if test:
            return kind
    return None


@dataclass(frozen=True)
class EgressPolicy:
    allowed_hosts: frozenset[str] = frozenset()  # HEARTH_SUBSCRIPTION_ALLOWED_HOSTS; empty: any host
    allowed_networks: tuple[Network, ...] = ()
    own_origin: tuple[str, str, int] | None = None  # Hearth's base URL: scheme, host, port
    own_addresses: frozenset[tuple[Address, int]] = frozenset()  # where Hearth listens

    @classmethod
    def from_settings(cls, settings: Any) -> EgressPolicy:
        hosts = frozenset(h.strip().lower() for h in settings.subscription_allowed_hosts.split(",") if h.strip())
        try:
            networks = tuple(ipaddress.ip_network(n.strip(), strict=False)
                             for n in settings.subscription_allowed_networks.split(",") if n.strip())
        except ValueError as error:
            raise ValueError(f"{ALLOWED_NETWORKS}: {error}") from None
        return cls(hosts, networks, _origin(URL(settings.public_base_url)),
                   _listening(settings.host, int(settings.port)))

    def address_refusal(self, address: Address, port: int) -> str | None:
        """Why connecting to `address`:`port` is refused (None: allowed)."""
        if (address, port) in self.own_addresses or (_embedded(address), port) in self.own_addresses:
            return f"{address} port {port}, where Hearth itself listens"
        reached = _embedded(address) or address
        if any(candidate in network for network in self.allowed_networks for candidate in (address, reached)):
            return None
        kind = _kind(reached)
        if kind is None:
            return None
        shown = f"{reached} (as {address})" if reached != address else str(address)
        return f"{shown}, {kind} address (allow its network with {ALLOWED_NETWORKS})"

    def url_refusal(self, url: URL) -> str | None:
        """Why `url` may not be called, judged without DNS: its host, Hearth's own origin, a literal address."""
        host = (url.raw_host or "").rstrip(".").lower()
        if self.allowed_hosts and host not in self.allowed_hosts:
            return f"host '{url.raw_host}' is not in the allowed hosts (HEARTH_SUBSCRIPTION_ALLOWED_HOSTS)"
        if _origin(url) == self.own_origin:
            return "it is Hearth's own base URL"
        addresses = numeric_addresses(host)
        if addresses is None and (":" in host or "%" in host):  # an IPv6 literal the system cannot read, a zone
            return f"'{url.raw_host}' is not an address Hearth can check"
        for address in addresses or ():
            refusal = self.address_refusal(address, _port(url))
            if refusal:
                return refusal
        return None

    async def resolved_refusal(self, url: URL, resolver: AbstractResolver) -> str | None:
        """Why `url`'s host name, resolved now, may not be called (None: allowed, or it does not resolve now)."""
        host = url.raw_host or ""
        if numeric_addresses(host) is not None:
            return None  # a literal: url_refusal judged it
        try:
            async with asyncio.timeout(RESOLVE_SECONDS):
                results = await resolver.resolve(host, _port(url), socket.AF_UNSPEC)
        except (OSError, TimeoutError):
            return None
        for result in results:
            refusal = self.address_refusal(ipaddress.ip_address(result["host"]), result["port"])
            if refusal:
                return f"'{host}' resolves to {refusal}"
        return None


def _port(url: URL) -> int:
    return url.port or _DEFAULT_PORTS.get(url.scheme, 0)


def _origin(url: URL) -> tuple[str, str, int]:
    return url.scheme.lower(), (url.raw_host or "").rstrip(".").lower(), _port(url)


def _listening(host: str, port: int) -> frozenset[tuple[Address, int]]:
    """The addresses Hearth listens on: the configured one, or every loopback form when it listens on all."""
    addresses = numeric_addresses(host)
    if addresses is None:  # a name (e.g. localhost): what it means here, once at start-up
        try:
            addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, port,
                                                                                         type=socket.SOCK_STREAM)]
        except (socket.gaierror, UnicodeError):
            addresses = []
    if any(address.is_unspecified for address in addresses):
        addresses += [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
                      ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")]
    return frozenset((address, port) for address in addresses)


class GuardedResolver(AbstractResolver):
    """Resolves through `inner` and keeps only addresses the policy allows: what aiohttp connects to."""

    def __init__(self, policy: EgressPolicy, inner: AbstractResolver) -> None:
        self.policy, self.inner = policy, inner

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed, refusals = [], []
        for result in results:
            refusal = self.policy.address_refusal(ipaddress.ip_address(result["host"]), result["port"])
            if refusal:
                refusals.append(refusal)
            else:
                allowed.append(result)
        if not allowed:
            # errno and text: aiohttp shows the text (ClientConnectorDNSError), so Subscription.error says why
            raise OSError(errno.EACCES, f"'{host}' resolves to {'; '.join(refusals) or 'nothing'}")
        return allowed

    async def close(self) -> None:
        await self.inner.close()

