"""/metrics (Prometheus text), request ids in responses and JSON logs, and what the middleware costs a read."""

from __future__ import annotations

import io
import logging
import re

import httpx
import orjson

from hearth.server.logs import JsonFormatter
from hearth.server.metrics import Histogram, Observability
from tests.conftest import BASE, FHIR_JSON


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {line_start} in\n{text}")


async def test_metrics_count_time_and_label_requests(app):
    observed = Observability(app)
    observed.attach(app.ctx, app.subscriptions)
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
