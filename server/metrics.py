"""Operating Hearth: Prometheus metrics at /metrics and a request id on every request (pure ASGI middleware).

The exposition text format (version 0.0.4) is written here rather than with prometheus_client: Hearth needs a
handful of counters and histograms, and a dependency's registry, locks and multiprocess machinery would cost
more on the read path than the few dict operations below.

Metrics:
- hearth_http_requests_total{interaction, method, status}      counter
- hearth_http_request_duration_seconds{interaction}             histogram (whole request, as the client sees it)
- hearth_storage_operation_duration_seconds{operation}          histogram (Store.read/vread/commit/search/...)
- hearth_subscription_dispatch_backlog                          gauge: changes not yet matched to subscriptions
- hearth_connector_resources_total{connector, outcome}           counter (fetched, stored, unchanged, rejected, …)
- hearth_connector_lag_seconds{connector}                        gauge: since the last successful pass
- hearth_connector_circuit_open{connector, state}                gauge: 1 while the upstream's circuit is not closed
- hearth_connector_request_seconds{connector}                    summary: upstream request latency
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import re
import time
from bisect import bisect_left
from typing import Any, Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hearth.server.logs import REQUEST_ID

_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STORE_OPERATIONS = ("read", "vread", "commit", "history", "changes", "search")
_BACKLOG_CAP = 10_000
_INCOMING_ID = re.compile(r"[A-Za-z0-9._\-]{1,128}")
_access = logging.getLogger("hearth.access")
# Request ids: a random per-process prefix and a counter (uuid4 costs ~9 us here, this under 1 us)
_ID_PREFIX = os.urandom(6).hex()
_ID_COUNTER = itertools.count(1)


class Histogram:
    """Cumulative-on-output histogram: one bucket increment per observation."""

    __slots__ = ("buckets", "counts", "total", "count")

    def __init__(self, buckets: tuple[float, ...] = _HTTP_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def state(self) -> list:
        """What another process needs to add this histogram to its own (server/shared_metrics.py)."""
        return [self.counts, self.total, self.count]

    def absorb(self, state: list) -> None:
        counts, total, count = state
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, counts)]
        self.total += total
        self.count += count

    def lines(self, name: str, labels: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip((*map(repr, self.buckets), "+Inf"), self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{bound}"}} {running}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total!r}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


class Metrics:
    """The process's counters and histograms (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.storage: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], Awaitable[float | None]]] = {}
        self.sections: list[Callable[[], Awaitable[list[str]]]] = []  # whole series families (connectors)
        # the other processes' snapshots, in a `--workers N` group (server/shared_metrics.py)
        self.peers: Callable[[], list[dict[str, Any]]] = list

    def snapshot(self) -> dict[str, Any]:
        """This process's counters and histograms, for the other processes of its group."""
        return {"requests": [[*key, count] for key, count in self.requests.items()],
                "latency": {name: histogram.state() for name, histogram in self.latency.items()},
                "storage": {name: histogram.state() for name, histogram in self.storage.items()}}

    def _with_peers(self) -> tuple[dict[tuple[str, str, int], int], dict[str, Histogram], dict[str, Histogram]]:
        """This process's counters and histograms with every other process's of its group added."""
        snapshots = [self.snapshot(), *self.peers()]
        requests: dict[tuple[str, str, int], int] = {}
        latency: dict[str, Histogram] = {}
        storage: dict[str, Histogram] = {}
        for snapshot in snapshots:
            for interaction, method, status, count in snapshot["requests"]:
                key = (interaction, method, int(status))
                requests[key] = requests.get(key, 0) + count
            for into, name in ((latency, "latency"), (storage, "storage")):
                for label, state in snapshot[name].items():
                    into.setdefault(label, Histogram()).absorb(state)
        return requests, latency, storage

    def observe_request(self, interaction: str, method: str, status: int, seconds: float) -> None:
        key = (interaction, method, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.latency.get(interaction)
        if histogram is None:
            histogram = self.latency[interaction] = Histogram()
        histogram.observe(seconds)

    def observe_storage(self, operation: str, seconds: float) -> None:
        histogram = self.storage.get(operation)
        if histogram is None:
            histogram = self.storage[operation] = Histogram()
        histogram.observe(seconds)

    async def render(self) -> bytes:
        requests, latency, storage = self._with_peers()
        lines = ["# HELP hearth_http_requests_total HTTP requests by FHIR interaction, method and status.",
                 "# TYPE hearth_http_requests_total counter"]
        for (interaction, method, status), count in sorted(requests.items()):
            lines.append(f'hearth_http_requests_total{{interaction="{interaction}",method="{method}",'
                         f'status="{status}"}} {count}')
        lines += ["# HELP hearth_http_request_duration_seconds Time to answer a request, by FHIR interaction.",
                  "# TYPE hearth_http_request_duration_seconds histogram"]
        for interaction, histogram in sorted(latency.items()):
            lines += histogram.lines("hearth_http_request_duration_seconds", f'interaction="{interaction}"')
        lines += ["# HELP hearth_storage_operation_duration_seconds Time spent in the storage backend.",
                  "# TYPE hearth_storage_operation_duration_seconds histogram"]
        for operation, histogram in sorted(storage.items()):
            lines += histogram.lines("hearth_storage_operation_duration_seconds", f'operation="{operation}"')
        for name, gauge in sorted(self.gauges.items()):
            value = await gauge()
            if value is not None:
                lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        for section in self.sections:
            lines += await section()
        return ("\n".join(lines) + "\n").encode()


def instrument_store(store: Any, metrics: Metrics) -> None:
    """Time the Store protocol's coroutines on this one instance (its class and isinstance checks unchanged)."""
    for name in _STORE_OPERATIONS:
        method = getattr(store, name, None)
        if method is None or getattr(method, "_hearth_timed", False):
            continue
        setattr(store, name, _timed(method, name, metrics))


def _timed(method: Callable[..., Awaitable[Any]], name: str, metrics: Metrics) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            metrics.observe_storage(name, time.perf_counter() - start)

    timed._hearth_timed = True  # type: ignore[attr-defined]
    return timed


def _backlog_gauge(ctx: Any, subscriptions: Any) -> Callable[[], Awaitable[float | None]]:
    async def backlog() -> float | None:
        checkpoint = await subscriptions.queue.checkpoint()
        return float(len(await ctx.store.changes(checkpoint, _BACKLOG_CAP)))

    return backlog


class Observability:
    """Pure ASGI middleware: serves /metrics, counts and times requests, tags each with a request id.

    The request id comes from the client's `X-Request-ID` (when it is a short token) or is made here; it is sent
    back in `X-Request-ID` and set in a context variable that server/logs.py adds to every log line.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None, path: str = "/metrics") -> None:
        self.app = app
        self.metrics = metrics or Metrics()
        self._sharing: asyncio.Task | None = None
        base_path = getattr(app, "base_path", "")
        self.paths = {path, base_path + path}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] in self.paths and scope["method"] in ("GET", "HEAD"):
            await self._serve_metrics(send)
            return
        incoming = _header(scope, b"x-request-id")
        if incoming and _INCOMING_ID.fullmatch(incoming):
            request_id = incoming
        else:
            request_id = f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"
        token = REQUEST_ID.set(request_id)
        status = 500
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw_id)]
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            interaction = scope.get("hearth.interaction", "none")
            self.metrics.observe_request(interaction, scope["method"], status, elapsed)
            if _access.isEnabledFor(logging.INFO):
                _access.info("%s %s %s", scope["method"], scope["path"], status,
                             extra={"interaction": interaction, "status": status, "method": scope["method"],
                                    "path": scope["path"], "duration_ms": round(elapsed * 1000, 3)})
            REQUEST_ID.reset(token)

    def _lifespan_send(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.attach(getattr(self.app, "ctx", None), getattr(self.app, "subscriptions", None),
                            getattr(self.app, "connectors", None))
                self._share(getattr(getattr(self.app, "settings", None), "metrics_dir", ""))
            elif message["type"] == "lifespan.shutdown.complete" and self._sharing is not None:
                self._sharing.cancel()
            await send(message)

        return lifespan_send

    def _share(self, folder: str) -> None:
        """In a `--workers N` group, share this process's figures with the others (server/shared_metrics.py)."""
        if folder:
            from hearth.server.shared_metrics import SharedMetrics
            self._sharing = asyncio.create_task(SharedMetrics(self.metrics, folder).run(), name="hearth-metrics")

    def attach(self, ctx: Any, subscriptions: Any, connectors: Any = None) -> None:
        """Instrument a started app's store and register its gauges and its connectors' series."""
        if ctx is None:
            return
        instrument_store(ctx.store, self.metrics)
        if subscriptions is not None:
            self.metrics.gauges["hearth_subscription_dispatch_backlog"] = _backlog_gauge(ctx, subscriptions)
        if connectors is not None:
            self.metrics.sections.append(connectors.metric_lines)

    async def _serve_metrics(self, send: Send) -> None:
        body = await self.metrics.render()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
