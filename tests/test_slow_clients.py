"""Clients that never finish their headers or body, or hold every connection, are cut off (a real server)."""

from __future__ import annotations

import json
import socket

import pytest

from tests.server_process import free_port, start, stop

WAIT = 30  # seconds a socket read may wait for the server's answer; the deadlines under test are 1 s


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    process = start(tmp_path_factory.mktemp("slow") / "hearth.db", port, header_timeout="1", body_timeout="1",
                    max_header_bytes="4096")
    yield port
    stop(process, hard=False)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(WAIT)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _status_and_outcome(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_connection_that_sends_nothing_gets_408(server):
    with _connect(server) as sock:
        status, outcome = _status_and_outcome(_read_all(sock))
    assert status == 408 and "HEARTH_HEADER_TIMEOUT" in outcome["issue"][0]["diagnostics"]


def test_headers_that_never_end_get_408(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        status, _ = _status_and_outcome(_read_all(sock))
    assert status == 408


def test_headers_past_the_size_bound_get_431(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for number in range(100):
            sock.sendall(b"X-Filler-%d: %s\r\n" % (number, b"x" * 100))
        status, outcome = _status_and_outcome(_read_all(sock))
    assert status == 431 and "HEARTH_MAX_HEADER_BYTES" in outcome["issue"][0]["diagnostics"]


def test_a_body_that_never_arrives_is_cut_off(server):
    with _connect(server) as sock:
        sock.sendall(b"POST /Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"resourceType\":")
        answer = _read_all(sock)  # returns once the server closes the connection
    assert b"201" not in answer.split(b"\r\n", 1)[0]


def test_ordinary_requests_on_a_kept_alive_connection_still_work(server):
    with _connect(server) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")


def test_connections_past_the_bound_get_503(tmp_path):
    port = free_port()  # deadlines far off, so the held connections stay open
    process = start(tmp_path / "hearth.db", port, header_timeout="600", max_connections="4")
    held = [_connect(port) for _ in range(4)]
    try:
        with _connect(port) as extra:
            answer = _read_all(extra)
        status, outcome = _status_and_outcome(answer)
        assert status == 503 and b"retry-after: 1" in answer.lower()
        assert "HEARTH_MAX_CONNECTIONS" in outcome["issue"][0]["diagnostics"]
    finally:
        for sock in held:
            sock.close()
        stop(process, hard=False)


def test_sigterm_stops_the_server_with_a_request_still_in_flight(tmp_path):
    port = free_port()  # a body that never arrives holds its request open until the body deadline (10 min)
    process = start(tmp_path / "hearth.db", port, body_timeout="600")
    with _connect(port) as sock:
        sock.sendall(b"POST /Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                     b"Content-Length: 1000\r\n\r\n{")
        process.terminate()
        assert process.wait(timeout=60) is not None  # uvicorn alone would wait for that request forever
        try:
            answer = _read_all(sock)
        except ConnectionResetError:  # the process went away with the unread request: as good as closed
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 2")
