"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, one request in flight on each.

Built on asyncio Protocols (no stream objects, no HTTP library) so that the client costs a few microseconds
per request; run it on uvloop. Responses must carry Content-Length (Hearth's always do).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Callable

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass
class RunStats:
    """One measured run: completed requests, their latencies (seconds), non-2xx count, wall and client CPU."""

    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0  # CPU seconds this process spent: near `wall` would mean the client limits the run

    @property
    def rate(self) -> float:
        return self.requests / self.wall if self.wall else 0.0

    def percentile(self, fraction: float) -> float:
        """Nearest-rank percentile of the latencies, in seconds."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


class _Connection(asyncio.Protocol):
    def __init__(self, next_request: Callable[[], bytes], stats: RunStats, deadline: float,
                 done: asyncio.Future) -> None:
        self.next_request = next_request
        self.stats = stats
        self.deadline = deadline
        self.done = done
        self.buffer = bytearray()
        self.expected = -1  # length of the whole response once its head is in
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send()

    def _send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.next_request())

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if self.expected < 0:
            head_end = buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            match = _CONTENT_LENGTH.search(buffer, 0, head_end + 2)
            if match is None:
                self._fail(ValueError("response without Content-Length"))
                return
            self.expected = head_end + 4 + int(match.group(1))
        if len(buffer) < self.expected:
            return
        now = time.perf_counter()
        if len(buffer) > self.expected:
            self._fail(ValueError("more bytes than one response (the server answered unasked)"))
            return
        self.stats.latencies.append(now - self.sent_at)
        self.stats.requests += 1
        if buffer[9:10] != b"2":  # "HTTP/1.1 2xx"
            self.stats.errors += 1
        buffer.clear()
        self.expected = -1
        if now < self.deadline:
            self._send()
        else:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)

    def _fail(self, error: Exception) -> None:
        self.transport.close()
        if not self.done.done():
            self.done.set_exception(error)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("the server closed the connection"))


async def run_load(host: str, port: int, concurrency: int, seconds: float,
                   next_request: Callable[[], bytes]) -> RunStats:
    """Keep `concurrency` connections busy for `seconds` with the requests `next_request` returns."""
    loop = asyncio.get_running_loop()
    stats = RunStats()
    waiters = []
    transports = []
    cpu_start = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    for _ in range(concurrency):
        done = loop.create_future()
        transport, _ = await loop.create_connection(lambda: _Connection(next_request, stats, deadline, done),
                                                    host, port)
        transports.append(transport)
        waiters.append(done)
    try:
        await asyncio.gather(*waiters)
    finally:
        for transport in transports:
            transport.close()
    stats.wall = time.perf_counter() - start
    stats.client_cpu = time.process_time() - cpu_start
    return stats
