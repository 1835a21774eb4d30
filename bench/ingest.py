"""Synthea ingest over HTTP transaction Bundles at 1, 2 and 4 concurrent clients, next to a raw SQLite floor.

    python -m bench.ingest [--runs 3] [--bundles 40] [--concurrency 1,2,4] [--out FILE.json]

Each run, for each concurrency (interleaved, so that drift on a shared machine hits all alike): a fresh
`hearth serve` (uvicorn) on a temporary SQLite file; the two `0-*` batch Bundles (hospitals, practitioners)
are posted untimed, then the first `--bundles` patient transaction Bundles are posted by N client threads,
each taking the next Bundle (`Prefer: return=minimal`). Rate: entries of the timed Bundles / wall time.
The floor is raw SQLite inserts of the same resource bodies with the store's pragmas, one transaction per
median Bundle size (what one transaction Bundle commits), measured in the same run.
Reported: medians over the runs of resources/s, the ratio to the floor, and the server's CPU in cores.
"""

from __future__ import annotations

import argparse
import bz2
import http.client
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.server import HearthProcess
from bench.sqlite_floor import insert_rate

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "testdata" / "synthea-120"
TARGET = 1500  # resources/s at the best concurrency, on 2 cores (issue 4)
HEADERS = {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}


def load(folder: Path, bundles: int) -> tuple[list[bytes], list[tuple[bytes, int]]]:
    """The batch files, and the first `bundles` patient transactions with their entry counts."""
    paths = sorted(folder.glob("*.json.bz2"))
    batches = [bz2.decompress(path.read_bytes()) for path in paths if path.name.startswith("0-")]
    patients = []
    for path in [path for path in paths if not path.name.startswith("0-")][:bundles]:
        body = bz2.decompress(path.read_bytes())
        patients.append((body, len(json.loads(body)["entry"])))
    return batches, patients


def post(server: HearthProcess, body: bytes) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=600)
    try:
        connection.request("POST", "/", body, HEADERS)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"POST / answered {response.status}: {answer[:500]!r}")
    finally:
        connection.close()


def ingest(folder: Path, batches: list[bytes], patients: list[tuple[bytes, int]], concurrency: int) -> dict[str, float]:
    """One timed run on a fresh server: resources/s and server CPU (cores) while ingesting."""
    server = HearthProcess(folder / f"hearth-{time.monotonic_ns()}.db", folder / "server.log")
    try:
        server.start()
    except RuntimeError:
        print(server.log.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    try:
        for body in batches:
            post(server, body)
        queue = list(reversed(patients))
        lock = threading.Lock()
        failures: list[BaseException] = []

        def client() -> None:
            while True:
                with lock:
                    if not queue or failures:
                        return
                    body, _ = queue.pop()
                try:
                    post(server, body)
                except BaseException as exc:  # reported after the run
                    failures.append(exc)
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        cpu, start = server.cpu_seconds(), time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter() - start, server.cpu_seconds() - cpu
        if failures:
            raise failures[0]
    finally:
        server.stop()
    resources = sum(count for _, count in patients)
    return {"rate": resources / elapsed, "seconds": elapsed, "server_cpu": cpu / elapsed}


def resource_bodies(patients: list[tuple[bytes, int]]) -> list[bytes]:
    return [json.dumps(entry["resource"], separators=(",", ":")).encode()
            for body, _ in patients for entry in json.loads(body)["entry"]]


def main(args: argparse.Namespace) -> int:
    batches, patients = load(args.data, args.bundles)
    group = int(statistics.median(count for _, count in patients))
    bodies = resource_bodies(patients)
    runs: dict[int, list[dict[str, float]]] = {concurrency: [] for concurrency in args.concurrency}
    floors: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hearth-ingest-") as temp:
        folder = Path(temp)
        for run in range(args.runs):
            for concurrency in args.concurrency:
                sample = ingest(folder, batches, patients, concurrency)
                runs[concurrency].append(sample)
                print(f"  run {run + 1}: {concurrency} client(s): {sample['rate']:,.0f} resources/s", file=sys.stderr)
            floors.append(insert_rate(folder / f"floor-{run}.db", bodies, args.seconds, group))
    floor = statistics.median(floors)
    rows = []
    for concurrency, samples in runs.items():
        rate = statistics.median(sample["rate"] for sample in samples)
        rows.append({"concurrency": concurrency, "rate": rate, "ratio": rate / floor,
                     "server_cpu": statistics.median(sample["server_cpu"] for sample in samples)})
    best = max(row["rate"] for row in rows)
    result = {"command": " ".join(["python -m bench.ingest", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "environment": {"cpus": os.cpu_count(), "python": platform.python_version(),
                              "sqlite": sqlite3.sqlite_version, "load_average": os.getloadavg()},
              "bundles": len(patients), "resources": len(bodies), "floor_group": group,
              "sqlite_insert_floor": floor, "rows": rows, "runs": runs,
              "target": f">= {TARGET} resources/s at the best concurrency: {'met' if best >= TARGET else 'MISSED'}"}
    out = Path(args.out or ROOT / "bench" / "results" / f"ingest-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("| clients | resources/s | floor (SQLite insert, {0}/txn) | ratio | server CPU |".format(group))
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['concurrency']} | {row['rate']:,.0f} | {floor:,.0f} | {row['ratio']:.3f} "
              f"| {row['server_cpu']:.0%} |")
    print(f"\n{result['command']}: {len(patients)} transaction Bundles, {len(bodies):,} resources, median of "
          f"{args.runs} runs; {result['target']}; JSON: {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per concurrency; medians are reported (3)")
    parser.add_argument("--bundles", type=int, default=40, help="patient transaction Bundles per run (40; 120: all)")
    parser.add_argument("--concurrency", type=lambda text: [int(n) for n in text.split(",")], default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each floor measurement (3)")
    parser.add_argument("--data", type=Path, default=SYNTHEA, help="the synthea-120 folder")
    parser.add_argument("--out", help="where to write the JSON result (bench/results/ingest-*.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
