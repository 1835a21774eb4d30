"""/metrics (Prometheus text), request ids in responses and JSON logs, and what the middleware costs a read."""

from __future__ import annotations

import io
import logging
import re
import time

import httpx
import orjson
import pytest

from server.logs import JsonFormatter
from server.metrics import Histogram, Observability
from tests.conftest import BASE, FHIR_JSON


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start} in\n{text}")


async def test_metrics_count_time_and_label_requests(app):
    observed = Observability(app)
    observed.attach(app.ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=observed), base_url=BASE) as client:
        created = (await client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).json()
        for _ in range(3):
            assert (await client.get(f"/Patient/{created['id']}")).status_code == 200
        assert (await client.get("/Patient/missing")).status_code == 404
        assert (await client.get("/Nope/x/y/z/w")).status_code == 404
        text = (await client.get("/metrics")).text
        assert (await client.get("http://hearth.test/metrics")).status_code == 200  # at the root as well
    assert _sample(text, 'hearth_http_requests_total{interaction="read",method="GET",status="200"}') == 3
    assert _sample(text, 'hearth_http_requests_total{interaction="read",method="GET",status="404"}') == 1
    assert _sample(text, 'hearth_http_requests_total{interaction="create",method="POST",status="201"}') == 1
    assert _sample(text, 'hearth_http_requests_total{interaction="none",method="GET",status="404"}') == 1
    assert _sample(text, 'hearth_http_request_duration_seconds_count{interaction="read"}') == 4
    assert _sample(text, 'hearth_http_request_duration_seconds_bucket{interaction="read",le="+Inf"}') == 4
    assert _sample(text, 'hearth_storage_operation_duration_seconds_count{operation="read"}') >= 4
    assert _sample(text, 'hearth_storage_operation_duration_seconds_count{operation="commit"}') >= 1
    assert _sample(text, "hearth_subscription_dispatch_backlog") >= 0
    assert "# TYPE hearth_http_request_duration_seconds histogram" in text


def test_histogram_buckets_are_cumulative():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    lines = histogram.lines("h", 'a="b"')
    assert lines == ['h_bucket{a="b",le="0.1"} 2', 'h_bucket{a="b",le="1.0"} 3', 'h_bucket{a="b",le="+Inf"} 4',
                     'h_sum{a="b"} 3.65', 'h_count{a="b"} 4']


async def test_request_id_in_response_and_json_logs(app):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("hearth.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Observability(app)), base_url=BASE) as client:
            given = await client.get("/metadata", headers={"X-Request-ID": "abc-123"})
            made = await client.get("/metadata")
            hostile = await client.get("/metadata", headers={"X-Request-ID": "x\" y"})
    finally:
        access.removeHandler(handler)
        access.setLevel(logging.NOTSET)
    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", made.headers["x-request-id"])
    assert hostile.headers["x-request-id"] != 'x" y'
    events = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["request_id"] for event in events] == ["abc-123", made.headers["x-request-id"],
                                                         hostile.headers["x-request-id"]]
    assert events[0]["interaction"] == "metadata" and events[0]["status"] == 200 and events[0]["duration_ms"] > 0


async def _asgi_get(application, path: str) -> int:
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"host", b"hearth.test")], "scheme": "http", "server": ("hearth.test", 80),
             "http_version": "1.1", "root_path": ""}
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await application(scope, receive, send)
    return status


async def _static(scope, receive, send) -> None:
    """An app that answers at once: the middleware's own cost shows against it."""
    scope["hearth.interaction"] = "read"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _best(application, path: str, rounds: int, n: int = 200) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            assert await _asgi_get(application, path) == 200
        best = min(best, (time.perf_counter() - start) / n)
    return best


@pytest.mark.parametrize("backend", ["sqlite"])  # the default backend
async def test_metrics_cost_little_on_the_read_path(app):
    """What the middleware adds per request, against an in-process read (no network: the worst case)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        created = (await client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).json()
    read = await _best(app, f"/fhir/Patient/{created['id']}", rounds=5)
    observed = Observability(_static)
    bare, wrapped = float("inf"), float("inf")
    for _ in range(10):  # interleaved, best of each: the machine's other load is noise, not cost
        bare = min(bare, await _best(_static, "/x", rounds=1, n=1000))
        wrapped = min(wrapped, await _best(observed, "/x", rounds=1, n=1000))
    cost = wrapped - bare
    print(f"metrics middleware: +{cost * 1e6:.1f} us per request; an in-process read takes {read * 1e6:.0f} us")
    assert cost < 0.2 * read
