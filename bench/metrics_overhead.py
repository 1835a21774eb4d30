"""What the metrics / request-id middleware (server/metrics.py) adds to a request, measured in-process.

No network and no uvicorn: the ASGI app is called directly, so the middleware's share is as large as it can ever
be. Two measurements, interleaved so the machine's other load hits both alike:

- floor: an app that answers at once, bare and wrapped: the middleware's own cost per request;
- read: a real SQLite-backed read of one Patient, bare and wrapped (store timing on): the cost in context.

    python -m bench.metrics_overhead --runs 7
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hearth.capability import fhir_json


async def asgi_get(application: Any, path: str) -> int:
    """One GET through an ASGI app; the response status."""
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"hearth.test")], "scheme": "http", "server": ("hearth.test", 80),
             "http_version": "1.1", "root_path": ""}
    status = 0

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await application(scope, receive, send)
    return status


async def static_app(scope: dict, receive: Any, send: Any) -> None:
    """Answers at once: against it the middleware's own cost shows."""
    scope["hearth.interaction"] = "read"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def per_request(application: Any, path: str, n: int) -> float:
    """Seconds per request over `n` sequential requests."""
    start = time.perf_counter()
    for _ in range(n):
        if await asgi_get(application, path) != 200:
            raise RuntimeError(f"GET {path} failed")
    return (time.perf_counter() - start) / n


async def paired(bare: Any, wrapped: Any, path: str, runs: int, n: int) -> tuple[list[float], list[float]]:
    """Interleaved timings of the same requests without and with the middleware."""
    plain, observed = [], []
    for _ in range(runs):
        plain.append(await per_request(bare, path, n))
        observed.append(await per_request(wrapped, path, n))
    return plain, observed


async def main(runs: int, n: int) -> dict:
    from hearth.server.app import create_app
    from hearth.server.metrics import Observability
    from hearth.server.settings import Settings
    from hearth.storage.sqlite.store import SqliteStore

    folder = Path(tempfile.mkdtemp(prefix="hearth-bench-metrics-"))
    app = create_app(Settings(storage=str(folder / "h.db")), SqliteStore(str(folder / "h.db")))
    await app.startup()
    try:
        version = await _seed(app)
        observed = Observability(app)
        observed.attach(app.ctx, app.subscriptions)
        floor = await paired(static_app, Observability(static_app), "/x", runs, n * 5)
        read = await paired(app, observed, f"/Patient/{version}", runs, n)
    finally:
        await app.shutdown()
    result = {}
    for name, (plain, wrapped) in (("floor", floor), ("read", read)):
        plain_us, wrapped_us = statistics.median(plain) * 1e6, statistics.median(wrapped) * 1e6
        result[name] = {"plain_us": round(plain_us, 1), "with_metrics_us": round(wrapped_us, 1),
                        "added_us": round(wrapped_us - plain_us, 1), "ratio": round(wrapped_us / plain_us, 3)}
    return result


async def _seed(app: Any) -> str:
    from hearth.interactions import crud
    from hearth.interactions.request import SYSTEM

    version = await crud.create(app.ctx, SYSTEM, "Patient", fhir_json.dumps({"resourceType": "Patient", "active": True}))
    return version.id


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="interleaved runs; medians are reported")
    parser.add_argument("--requests", type=int, default=500, help="requests per run (reads; 5x for the floor)")
    args = parser.parse_args()
    print(fhir_json.dumps(asyncio.run(main(args.runs, args.requests)), pretty=True).decode())
