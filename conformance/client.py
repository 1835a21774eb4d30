"""The runner's HTTP side: one request and its response (an Exchange), sent with aiohttp."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from hearth.conformance.script import parse_document


@dataclass
class Exchange:
    """A request the runner sent and what came back; headers keyed in lower case."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: bytes | None
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    request_resource: Any = None

    @property
    def resource(self) -> Any:
        """The response body parsed (JSON or XML, by its Content-Type), or None when empty or not FHIR."""
        if not hasattr(self, "_resource"):
            try:
                self._resource = parse_document(self.body, self.headers.get("content-type", "")) if self.body else None
            except ValueError:
                self._resource = None
        return self._resource


class Client:
    """An aiohttp session that never raises for an HTTP status (asserts judge those)."""

    def __init__(self, timeout: float = 60.0, headers: dict[str, str] | None = None) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._headers = headers or {}  # sent with every request (e.g. Authorization); a script's own win
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, exchange: Exchange) -> Exchange:
        assert self._session is not None, "use Client in `async with`"
        # the runner encodes URLs itself (encodeRequestUrl); aiohttp must not re-quote them
        async with self._session.request(exchange.method, URL(exchange.url, encoded=True),
                                         headers=exchange.request_headers, data=exchange.request_body,
                                         allow_redirects=False) as response:
            exchange.status = response.status
            exchange.headers = {key.lower(): value for key, value in response.headers.items()}
            exchange.body = await response.read()
        return exchange
