"""HL7 v2 over MLLP: how many messages Hearth acknowledges per second, how fast it converts them, and how long an
ACK takes at a steady rate.

    python -m bench.hl7v2 [--messages 1500] [--runs 3] [--out FILE.json]

The floor is an MLLP listener in a process of its own (Hearth's framing, connectors/hl7v2/mllp.py) that answers
every frame with a fixed ACK and stores nothing: what the network, the framing and this client cost, measured in
the same run. Against it, a `hearth serve` (SQLite, default settings) with one `hl7v2-mllp` connector:

- ORU R01 (5 OBX each) and ADT A01 messages per second with 1 and 4 connections, each connection sending its next
  message when the previous one's ACK arrives (as interface engines do); the server converts meanwhile, as it
  always does; the ratio to the floor;
- conversion: messages per second from the first message sent until the inbox holds nothing pending;
- ACK latency p50/p99 at a steady 50 ORU messages per second for `--steady` seconds, pipelined on one connection,
  each latency counted from the message's scheduled send time (a stall counts against every message it delays);
- the server's CPU seconds (with its SQLite writer process) per 1,000 messages.

Each figure is the median of `--runs` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server import HearthProcess, free_port
from hearth.connectors.hl7v2.mllp import Listener, frame, read_frames

TARGETS = {"oru_4_connections": 300.0, "ack_p99_ms": 100.0}  # issue 16, on 2 cores
FLOOR_ACK = b"MSH|^~\\&|FLOOR|FLOOR|||20240101000000||ACK^R01^ACK|1|P|2.5.1\rMSA|AA|1\r"
_OBX = (("2345-7", "Glucose", "95", "mg/dL", "70-99"), ("2160-0", "Creatinine", "0.9", "mg/dL", "0.6-1.2"),
        ("2823-3", "Potassium", "4.1", "mmol/L", "3.5-5.1"), ("2951-2", "Sodium", "140", "mmol/L", "136-145"),
        ("3094-0", "Urea nitrogen", "14", "mg/dL", "7-20"))


def oru_message(n: int, run: str = "") -> bytes:
    """An ORU R01 with 5 numeric OBX, its own control id and order; 50 patients take turns."""
    patient = n % 50
    segments = [
        f"MSH|^~\\&|LAB|LABFAC|HEARTH|HEARTHFAC|20240501120000||ORU^R01^ORU_R01|ORU{run}-{n}|P|2.5.1",
        f"PID|1||P{patient:04d}^^^LABFAC^MR||Bench^Patient{patient}||19700101|F",
        f"ORC|RE|ORD{run}-{n}^LAB|FIL{run}-{n}^LAB",
        f"OBR|1|ORD{run}-{n}^LAB|FIL{run}-{n}^LAB|24323-8^Metabolic panel^LN|||20240501110000|||||||||||||||"
        "20240501120000|||F"]
    for k, (code, name, value, unit, ref) in enumerate(_OBX, 1):
        segments.append(f"OBX|{k}|NM|{code}^{name}^LN||{value}|{unit}^{unit}^UCUM|{ref}|N|||F|||20240501110000")
    return "\r".join(segments).encode() + b"\r"


def adt_message(n: int, run: str = "") -> bytes:
    """An ADT A01 admitting patient n to a bed."""
    return ("\r".join([
        f"MSH|^~\\&|ADT|HOSP|HEARTH|HEARTHFAC|20240501120000||ADT^A01^ADT_A01|ADT{run}-{n}|P|2.5.1",
        "EVN|A01|20240501120000",
        f"PID|1||A{run}{n:06d}^^^HOSP^MR||Admitted^Person{n}||19800101|M|||1 Main St^^Springfield^IL^62701^USA^H",
        f"PV1|1|I|W{n % 9}^{n % 40}^A|||||||||||||||||V{run}{n:06d}^^^HOSP^VN|||||||||||||||||||||||||"
        "20240501120000"]) + "\r").encode()


async def _connection(port: int, messages: list[bytes]) -> int:
    """Send each message once the previous one's ACK arrived; the number of ACKs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = 0
    try:
        for message in messages:
            writer.write(frame(message))
            await writer.drain()
            answered += len(await read_frames(reader, 1, 30))
    finally:
        writer.close()
    return answered


async def throughput(port: int, messages: list[bytes], connections: int) -> float:
    """Messages acknowledged per second over `connections` connections sharing `messages`."""
    shares = [messages[i::connections] for i in range(connections)]
    started = time.perf_counter()
    answered = await asyncio.gather(*(_connection(port, share) for share in shares))
    elapsed = time.perf_counter() - started
    assert sum(answered) == len(messages), f"{sum(answered)} of {len(messages)} answered"
    return len(messages) / elapsed


async def steady(port: int, rate: float, seconds: float, run: str) -> tuple[float, float]:
    """ACK latency p50 and p99 (ms) at `rate` messages/s, pipelined on one connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    count = int(rate * seconds)
    scheduled: list[float] = []
    latencies: list[float] = []

    async def receive() -> None:
        buffer = bytearray()
        while len(latencies) < count:
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(b"\x1c\r")) >= 0:
                del buffer[:end + 2]
                latencies.append(time.perf_counter() - scheduled[len(latencies)])
    receiving = asyncio.create_task(receive())
    start = time.perf_counter() + 0.05
    for n in range(count):
        at = start + n / rate
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        scheduled.append(at)
        writer.write(frame(oru_message(n, f"{run}s")))
    await asyncio.wait_for(receiving, 60)
    writer.close()
    ordered = sorted(latencies)
    return ordered[len(ordered) // 2] * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def pending(database: Path) -> int:
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM hl7_inbox WHERE state = 'pending'").fetchone()[0]
    finally:
        conn.close()


async def wait_converted(database: Path, since: float) -> float:
    """Seconds from `since` until nothing is pending."""
    while pending(database):
        await asyncio.sleep(0.05)
    return time.perf_counter() - since


def floor_server(port: int) -> None:
    """The floor: frames answered with a fixed ACK, nothing stored (run in its own process)."""
    async def serve() -> None:
        async def answer(_payload: bytes, _reply: Any) -> bytes:
            return FLOOR_ACK
        listener = Listener(answer)
        await listener.start("127.0.0.1", port)
        await asyncio.Event().wait()
    asyncio.run(serve())


async def one_run(server: HearthProcess, mllp_port: int, floor_port: int, count: int, steady_seconds: float,
                  run: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for connections in (1, 4):
        tag = f"r{run}c{connections}"
        oru = [oru_message(n, tag) for n in range(count)]
        figures[f"floor_{connections}_connections"] = await throughput(floor_port, oru, connections)
        cpu = server.cpu_seconds()
        started = time.perf_counter()
        figures[f"oru_{connections}_connections"] = await throughput(mllp_port, oru, connections)
        converted_in = await wait_converted(server.database, started)
        figures[f"oru_converted_per_s_{connections}"] = count / converted_in
        figures[f"cpu_s_per_1000_oru_{connections}"] = (server.cpu_seconds() - cpu) / count * 1000
        adt = [adt_message(n, tag) for n in range(count // 2)]
        figures[f"adt_{connections}_connections"] = await throughput(mllp_port, adt, connections)
        await wait_converted(server.database, time.perf_counter())
    figures["ack_p50_ms"], figures["ack_p99_ms"] = await steady(mllp_port, 50.0, steady_seconds, f"r{run}")
    await wait_converted(server.database, time.perf_counter())
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="hearth-bench-hl7v2-"))
    mllp_port, floor_port = free_port(), free_port()
    connectors = folder / "connectors.toml"
    connectors.write_text(f'[connectors.bench]\nkind = "hl7v2-mllp"\nport = {mllp_port}\n')
    server = HearthProcess(folder / "hearth.db", folder / "server.log", {"HEARTH_CONNECTORS": str(connectors)})
    floor = subprocess.Popen([sys.executable, "-m", "bench.hl7v2", "--floor-server", str(floor_port)],
                             cwd=Path(__file__).resolve().parents[1])
    server.start()
    try:
        await asyncio.sleep(1.0)  # the connector takes its lease and listens just after start-up
        runs = [await one_run(server, mllp_port, floor_port, args.messages, args.steady, n) for n in range(args.runs)]
    finally:
        server.stop()
        floor.terminate()
        floor.wait()
    medians = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    for connections in (1, 4):
        medians[f"oru_ratio_{connections}"] = medians[f"oru_{connections}_connections"] / \
            medians[f"floor_{connections}_connections"]
    return {"messages": args.messages, "runs": runs, "median": {k: round(v, 3) for k, v in medians.items()},
            "targets": TARGETS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hl7v2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1500, help="messages per throughput measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady", type=float, default=20.0, help="seconds at 50 messages/s")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--floor-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.floor_server:
        floor_server(args.floor_server)
        return 0
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
