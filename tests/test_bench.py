"""bench/loadgen.py: the load generator counts what the server answered, and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import RunStats, run_load


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Keep-alive HTTP/1.1: 200 with a body for /ok, 404 otherwise; the body arrives in two writes."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        found = head.startswith(b"GET /ok ")
        body = b'{"resourceType":"Basic"}' if found else b"{}"
        status = b"200 OK" if found else b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        await writer.drain()
        writer.write(body)
        await writer.drain()


@pytest.fixture
async def server():
    listener = await asyncio.start_server(_quiet, "127.0.0.1", 0)
    yield listener.sockets[0].getsockname()[1]
    listener.close()


async def _quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await _serve(reader, writer)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def test_counts_responses_and_errors(server):
    ok = await run_load("127.0.0.1", server, 3, 0.2, lambda: b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n")
    assert ok.requests > 10 and ok.errors == 0
    assert len(ok.latencies) == ok.requests and ok.wall >= 0.2
    missing = await run_load("127.0.0.1", server, 2, 0.1, lambda: b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert missing.requests > 0 and missing.errors == missing.requests


def test_percentiles_are_nearest_rank():
    stats = RunStats(latencies=[0.004, 0.001, 0.003, 0.002] * 25)
    assert stats.percentile(0.50) == 0.002
    assert stats.percentile(0.99) == 0.004
    assert RunStats().percentile(0.5) == 0.0
