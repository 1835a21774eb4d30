"""Crashes of a real `hearth serve` (SIGKILL) around HL7 v2 messages: between receipt and conversion, while
converting, and in the middle of a frame. Nothing acknowledged is lost, nothing is converted twice, and an
unacknowledged message sent again is stored once. Also `hearth connector run NAME --once` (it converts what is
pending) and `status`. SQLite only: a second process cannot reach the tests' in-memory MongoDB."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path

import httpx

from bench.hl7v2 import oru_message
from connector_helpers import toml
from hearth.connectors.hl7v2.mllp import START, read_frames, send
from hl7v2_helpers import acks
from server_process import free_port, start, stop

HOST = "127.0.0.1"


def _connectors(folder: Path, port: int, **table: object) -> Path:
    path = folder / f"c-{len(list(folder.glob('c-*.toml')))}.toml"
    path.write_text(toml({"lab": {"kind": "hl7v2-mllp", "port": port, **table}}))
    return path


async def _serve(folder: Path, port: int, mllp: int, **table: object):
    server = await asyncio.to_thread(start, folder / "hearth.db", port,
                                     connectors=str(_connectors(folder, mllp, **table)))
    for _ in range(200):  # the connector takes its lease and listens just after start-up
        try:
            _, writer = await asyncio.open_connection(HOST, mllp)
            writer.close()
            return server
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("the connector does not listen")


def _pending(folder: Path) -> int:
    conn = sqlite3.connect(folder / "hearth.db")
    try:
        return conn.execute("SELECT count(*) FROM hl7_inbox WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()


async def _converted(folder: Path, port: int, mllp: int, *types: str) -> list[list[dict]]:
    """A server started on `folder`'s database, once nothing is pending there: every resource of each of `types`."""
    server = await _serve(folder, port, mllp)
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as client:
            await _converged(client, folder)
            return [await _everything(client, resource_type) for resource_type in types]
    finally:
        await asyncio.to_thread(stop, server, False)


async def _converged(client: httpx.AsyncClient, folder: Path, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.1)):
        if not _pending(folder):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("messages are still pending")


async def _everything(client: httpx.AsyncClient, resource_type: str) -> list[dict]:
    """Every resource of a type, page after page."""
    resources: list[dict] = []
    url: str | None = f"/{resource_type}?_count=500"
    while url:
        page = await client.get(url)
        assert page.status_code == 200, page.text
        bundle = page.json()
        resources += [entry["resource"] for entry in bundle.get("entry", [])]
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
    return resources


async def _hearth_connector(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "hearth.server.cli", "connector", *args,
                                                   env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_killed_between_receipt_and_conversion_loses_nothing(tmp_path):
    port, mllp = free_port(), free_port()
    server = await _serve(tmp_path, port, mllp, convert=False)  # receives and acknowledges, converts nothing
    try:
        answers = await send(HOST, mllp, [oru_message(n) for n in range(100)], timeout=30)
        assert [acks(a)[0]["msa1"] for a in answers] == ["AA"] * 100
    finally:
        await asyncio.to_thread(stop, server, True)
    assert _pending(tmp_path) == 100
    env = {"HEARTH_STORAGE": str(tmp_path / "hearth.db"),
           "HEARTH_CONNECTORS": str(_connectors(tmp_path, mllp, convert=True))}
    code, out, err = await _hearth_connector("run", "lab", "--once", env=env)
    assert code == 0, err
    status = json.loads(out)
    assert status["checkpoint"]["pending"] == 0 and status["counters"]["converted"] == 100
    code, out, _ = await _hearth_connector("status", "lab", env=env)
    assert code == 0 and json.loads(out)[0]["counters"]["converted"] == 100
    reports, observations = await _converted(tmp_path, port, mllp, "DiagnosticReport", "Observation")
    assert len(reports) == 100 and len(observations) == 500
    assert {o["meta"]["versionId"] for o in observations} == {"1"}


async def test_killed_while_converting_converts_each_message_once(tmp_path):
    port, mllp = free_port(), free_port()
    server = await _serve(tmp_path, port, mllp, convert=False)  # 300 messages waiting
    try:
        answers = await asyncio.gather(*(send(HOST, mllp, [oru_message(n) for n in range(k, 300, 3)], timeout=60)
                                         for k in range(3)))
        assert sum(len(a) for a in answers) == 300
    finally:
        await asyncio.to_thread(stop, server, False)
    server = await _serve(tmp_path, port, mllp)  # converting them
    try:
        while _pending(tmp_path) > 250:
            await asyncio.sleep(0.01)
    finally:
        await asyncio.to_thread(stop, server, True)
    left = _pending(tmp_path)
    assert 0 < left < 300, left  # killed in the middle of the conversions
    reports, observations, patients = await _converted(tmp_path, port, mllp, "DiagnosticReport", "Observation",
                                                       "Patient")
    assert len(reports) == 300 and len(observations) == 1500 and len(patients) == 50
    # a message converted before the kill but not marked so is converted again: same ids, same content, no version
    assert {o["meta"]["versionId"] for o in observations} == {"1"}
    assert {r["meta"]["versionId"] for r in reports} == {"1"}


async def test_messages_converted_again_make_no_new_versions(tmp_path):
    """What a kill between a message's transaction and marking it converted leaves (every message converted, none
    marked), made on purpose: converted again, the messages find their resources current, decimals included."""
    port, mllp = free_port(), free_port()
    server = await _serve(tmp_path, port, mllp, convert=False)
    try:
        await send(HOST, mllp, [oru_message(n) for n in range(30)], timeout=60)
    finally:
        await asyncio.to_thread(stop, server, False)
    await _converted(tmp_path, port, mllp)
    conn = sqlite3.connect(tmp_path / "hearth.db")
    try:
        with conn:
            assert conn.execute("UPDATE hl7_inbox SET state = 'pending', settled = NULL").rowcount == 30
    finally:
        conn.close()
    observations, reports = await _converted(tmp_path, port, mllp, "Observation", "DiagnosticReport")
    assert len(observations) == 150 and any('"value":0.9' in json.dumps(o, separators=(",", ":"))
                                            for o in observations)
    assert {o["meta"]["versionId"] for o in observations} == {"1"}
    assert {r["meta"]["versionId"] for r in reports} == {"1"}


async def test_killed_mid_frame_the_sender_sends_again_and_it_is_stored_once(tmp_path):
    port, mllp = free_port(), free_port()
    message = oru_message(7)
    server = await _serve(tmp_path, port, mllp)
    reader, writer = await asyncio.open_connection(HOST, mllp)
    writer.write(START + message[:len(message) // 2])
    await writer.drain()
    await asyncio.sleep(0.2)
    await asyncio.to_thread(stop, server, True)
    assert await read_frames(reader, 1, 1) == []  # no ACK: the sender must send it again
    writer.close()
    server = await _serve(tmp_path, port, mllp)
    try:
        first = await send(HOST, mllp, [message])
        again = await send(HOST, mllp, [message])
        assert acks(first[0])[0]["msa1"] == "AA" and again == first
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}") as client:
            await _converged(client, tmp_path)
            assert len(await _everything(client, "DiagnosticReport")) == 1
            metrics = (await client.get("/metrics")).text
    finally:
        await asyncio.to_thread(stop, server, False)
    assert 'hearth_hl7v2_messages_total{connector="lab",outcome="duplicates"} 1' in metrics
    assert 'hearth_hl7v2_pending{connector="lab"} 0' in metrics
