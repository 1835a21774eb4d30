"""Read and create throughput over HTTP, each figure next to a floor measured in the same run.

    python -m bench.crud [--runs 5] [--seconds 3] [--concurrency 1,16] [--out FILE.json]

Starts `hearth serve` (uvicorn) on a temporary SQLite file and a free port, loads the 120 Synthea Patients,
then, run after run (interleaved, so that drift on a shared machine hits all scenarios alike):
- `GET /_bench/static?size=N`: the read floor, N the median stored Patient size, through the same app and
  dispatch (enabled by HEARTH_BENCH_FLOOR=1) but without the interaction (storage, headers);
- `GET /Patient/{id}`: reads of the stored Patients;
- `POST /Observation`: creates of Synthea Observations (references rewritten to Type/id);
- the same read and create on a second server with authorization required and AuditEvents recorded, with a
  bearer token (`system/*.cruds`, from Hearth's own authorization server), as a ratio to the first server's, which
  runs without audit (`HEARTH_AUDIT=false`) and takes no token: the cost of security as a whole;
- the same read asking for gzip (`Accept-Encoding: gzip`): the cost of compressing a 3.5 KB Patient.
The create floor is raw SQLite inserts of the same bodies with the store's pragmas, as many rows per
transaction as there are connections: one commit per insert for 1 connection, 16 rows per commit for 16
(the most the store's group commit can gather from 16 clients with one request in flight each).
Reported: medians over the runs of req/s, p50 and p99, the ratio to the floor, and the CPU the server (all
threads, with its SQLite writer process) and the client used, in cores (a client near 100% of its one core
would be the limit, not the server).
"""

from __future__ import annotations

import argparse
import bz2
import http.client
import itertools
import json
import os
import platform
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import uvloop

from bench.loadgen import RunStats, run_load
from hearth.capability import fhir_json
from bench.server import HearthProcess
from bench.sqlite_floor import insert_rate

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "testdata" / "synthea-120"
_URN = re.compile(r"urn:uuid:[0-9a-f-]+")
OBSERVATIONS = 2000  # distinct create bodies, cycled
TARGETS = {  # issue 2
    ("read", 16): ("ratio to floor >= 0.40", lambda row: row["ratio"] >= 0.40),
    ("read", 1): ("p50 < 2 ms", lambda row: row["p50_ms"] < 2.0),
    ("create", 16): (">= 1000 resources/s", lambda row: row["rate"] >= 1000),
    ("read+token", 16): (">= 0.70 of reads without", lambda row: row["ratio"] >= 0.70),  # issue 14
    ("create+token", 16): (">= 0.80 of creates without", lambda row: row["ratio"] >= 0.80),
}


def synthea_bodies(folder: Path, observations: int) -> tuple[list[dict], list[bytes]]:
    """The Synthea Patients (ids kept), and `observations` Observation bodies with urn:uuid references
    rewritten to Type/id (ids dropped: creates assign their own)."""
    patients: list[dict] = []
    bodies: list[bytes] = []
    for path in sorted(folder.glob("*.json.bz2")):
        if path.name.startswith("0-"):
            continue
        bundle = fhir_json.loads(bz2.decompress(path.read_bytes()))  # decimals kept as written
        local = {entry["fullUrl"]: f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
                 for entry in bundle["entry"]}
        for entry in bundle["entry"]:
            resource = entry["resource"]
            if resource["resourceType"] == "Patient":
                patients.append(resource)
            elif resource["resourceType"] == "Observation" and len(bodies) < observations:
                text = fhir_json.dumps({key: value for key, value in resource.items() if key != "id"}).decode()
                text = _URN.sub(lambda match: local.get(match.group(0), match.group(0)), text)
                bodies.append(text.encode())
    if not patients or not bodies:
        raise SystemExit(f"no Synthea Patients and Observations in {folder} (--data)")
    return patients, bodies


def seed(server: HearthProcess, patients: list[dict], headers: dict[str, str] | None = None) -> list[int]:
    """PUT the Patients at their ids; the sizes of the stored bodies as served."""
    conn = http.client.HTTPConnection(server.host, server.port)
    sizes = []
    for patient in patients:
        conn.request("PUT", f"/Patient/{patient['id']}", fhir_json.dumps(patient),
                     {"Content-Type": "application/fhir+json", **(headers or {})})
        response = conn.getresponse()
        body = response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"seeding Patient/{patient['id']}: {response.status} {body[:300]!r}")
        sizes.append(len(body))
    conn.close()
    return sizes


def get_requests(paths: list[str], headers: str = "") -> Callable[[], bytes]:
    requests = itertools.cycle([f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/fhir+json\r\n"
                                f"{headers}\r\n".encode() for path in paths])
    return requests.__next__


def post_requests(path: str, bodies: list[bytes], headers: str = "") -> Callable[[], bytes]:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n{headers}"
            "Content-Length: ")
    requests = itertools.cycle([f"{head}{len(body)}\r\n\r\n".encode() + body for body in bodies])
    return requests.__next__


@dataclass
class Sample:
    scenario: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float  # fraction of one core
    server_cpu: float  # in cores (all threads of the server and its writer process)


async def measure(server: HearthProcess, scenario: str, concurrency: int, seconds: float,
                  requests: Callable[[], bytes]) -> Sample:
    cpu = server.cpu_seconds()
    stats: RunStats = await run_load(server.host, server.port, concurrency, seconds, requests)
    server_cpu = (server.cpu_seconds() - cpu) / stats.wall
    return Sample(scenario, concurrency, stats.rate, 1000 * stats.percentile(0.50), 1000 * stats.percentile(0.99),
                  stats.errors, stats.client_cpu / stats.wall, server_cpu)


def median_row(samples: list[Sample]) -> dict[str, Any]:
    return {"rate": statistics.median(s.rate for s in samples),
            "p50_ms": statistics.median(s.p50_ms for s in samples),
            "p99_ms": statistics.median(s.p99_ms for s in samples),
            "errors": sum(s.errors for s in samples),
            "client_cpu": statistics.median(s.client_cpu for s in samples),
            "server_cpu": statistics.median(s.server_cpu for s in samples)}


Scenarios = dict[str, tuple[HearthProcess, Callable[[], bytes]]]


async def http_runs(args: argparse.Namespace, scenarios: Scenarios) -> list[Sample]:
    for server, requests in scenarios.values():  # warm-up: caches, the registry, connections' first requests
        await run_load(server.host, server.port, max(args.concurrency), 1.0, requests)
    samples = []
    for run in range(args.runs):
        for concurrency in args.concurrency:
            for scenario, (server, requests) in scenarios.items():
                sample = await measure(server, scenario, concurrency, args.seconds, requests)
                samples.append(sample)
                print(f"  run {run + 1}/{args.runs} {scenario:<6} c={concurrency:<3} {sample.rate:>8,.0f}/s "
                      f"p50 {sample.p50_ms:.2f} ms p99 {sample.p99_ms:.2f} ms CPU server {sample.server_cpu:.0%} "
                      f"client {sample.client_cpu:.0%}",
                      file=sys.stderr)
    return samples


def floor_runs(folder: Path, bodies: list[bytes], args: argparse.Namespace) -> dict[int, float]:
    """Median raw-insert rates per group size: as many rows per transaction as there are connections."""
    rates: dict[int, list[float]] = {concurrency: [] for concurrency in args.concurrency}
    for run in range(args.runs):
        for group in rates:
            rates[group].append(insert_rate(folder / f"floor-{run}-{group}.db", bodies, args.seconds, group))
    return {group: statistics.median(values) for group, values in rates.items()}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| interaction | conn. | req/s | p50 ms | p99 ms | floor | floor req/s | floor p50 ms | ratio "
             "| server CPU | client CPU | target |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        floor_p50 = f"{row['floor_p50_ms']:.2f}" if row.get("floor_p50_ms") is not None else "–"
        lines.append(f"| {row['label']} | {row['concurrency']} | {row['rate']:,.0f} | {row['p50_ms']:.2f} "
                     f"| {row['p99_ms']:.2f} | {row['floor']} | {row['floor_rate']:,.0f} | {floor_p50} "
                     f"| {row['ratio']:.2f} | {row['server_cpu']:.0%} | {row['client_cpu']:.0%} "
                     f"| {row.get('target', '')} |")
    return "\n".join(lines)


def build_rows(samples: list[Sample], inserts: dict[int, float], patient_size: int,
               concurrencies: list[int]) -> list[dict[str, Any]]:
    rows = []
    for concurrency in concurrencies:
        of = {name: [s for s in samples if s.scenario == name and s.concurrency == concurrency]
              for name in ("static", "read", "gzip", "read+token", "create", "create+token")}
        static = median_row(of["static"])
        reads = []
        for name, label in (("read", "GET Patient/{id}"), ("gzip", "GET Patient/{id}, gzip")):
            row = {**median_row(of[name]), "label": label, "concurrency": concurrency,
                   "floor": f"static {patient_size} B", "floor_rate": static["rate"],
                   "floor_p50_ms": static["p50_ms"], "floor_client_cpu": static["client_cpu"]}
            row["ratio"] = row["rate"] / static["rate"]
            reads.append(row)
        read, gzip = reads
        read_token = {**median_row(of["read+token"]), "label": "GET Patient/{id}, token + audit",
                      "concurrency": concurrency, "floor": "the read without either", "floor_rate": read["rate"],
                      "floor_p50_ms": read["p50_ms"]}
        read_token["ratio"] = read_token["rate"] / read["rate"]
        create = {**median_row(of["create"]), "label": "POST Observation", "concurrency": concurrency,
                  "floor": f"SQLite insert, {concurrency}/txn", "floor_rate": inserts[concurrency],
                  "floor_p50_ms": None}
        create["ratio"] = create["rate"] / inserts[concurrency]
        create_token = {**median_row(of["create+token"]), "label": "POST Observation, token + audit",
                        "concurrency": concurrency, "floor": "the create without either",
                        "floor_rate": create["rate"], "floor_p50_ms": create["p50_ms"]}
        create_token["ratio"] = create_token["rate"] / create["rate"]
        for kind, row in (("read", read), ("read+token", read_token), ("create", create),
                          ("create+token", create_token)):
            target = TARGETS.get((kind, concurrency))
            if target:
                row["target"] = f"{target[0]}: {'met' if target[1](row) else 'MISSED'}"
        rows += [read, gzip, read_token, create, create_token]
    return rows


def environment() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(), "load_average": os.getloadavg()}


async def main(args: argparse.Namespace) -> int:
    patients, observations = synthea_bodies(args.data, OBSERVATIONS)
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as temp:
        folder = Path(temp)
        server = HearthProcess(folder / "hearth.db", folder / "server.log", {"HEARTH_AUDIT": "false"})
        secured = HearthProcess(folder / "secured.db", folder / "secured.log", {"HEARTH_AUTH": "required"})
        server.start()
        secured.start()
        try:
            token = secured.token("system/*.cruds")
            sizes = seed(server, patients)
            seed(secured, patients, {"Authorization": f"Bearer {token}"})
            patient_size = int(statistics.median(sizes))
            bearer = f"Authorization: Bearer {token}\r\n"
            reads = [f"/Patient/{p['id']}" for p in patients]
            scenarios: Scenarios = {
                "static": (server, get_requests([f"/_bench/static?size={patient_size}"])),
                "read": (server, get_requests(reads)),
                "gzip": (server, get_requests(reads, "Accept-Encoding: gzip\r\n")),
                "read+token": (secured, get_requests(reads, bearer)),
                "create": (server, post_requests("/Observation", observations)),
                "create+token": (secured, post_requests("/Observation", observations, bearer))}
            print(f"hearth serve at {server.base_url} and {secured.base_url} (auth, audit); {len(patients)} "
                  f"Patients (median {patient_size} B); {args.runs} runs of {args.seconds} s", file=sys.stderr)
            samples = await http_runs(args, scenarios)
        finally:
            server.stop()
            secured.stop()
        print("  SQLite insert floor ...", file=sys.stderr)
        inserts = floor_runs(folder, observations, args)
    rows = build_rows(samples, inserts, patient_size, args.concurrency)
    result = {"command": " ".join(["python -m bench.crud", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment(),
              "runs": args.runs, "seconds": args.seconds, "patient_size": patient_size, "sqlite_insert_floor": inserts, "rows": rows,
              "samples": [asdict(sample) for sample in samples]}
    out = Path(args.out or ROOT / "bench" / "results" / f"crud-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(rows))
    failed = [f"{row['label']} at {row['concurrency']}: {row['errors']}" for row in rows if row["errors"]]
    if failed:  # a fast error is not a fast success: say so next to the figures
        print(f"\nNon-2xx responses (figures include them): {'; '.join(failed)}")
    print(f"\n{result['command']} — median of {args.runs} runs of {args.seconds:g} s; JSON: {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.crud", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scenario; medians are reported (5)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each run (3)")
    parser.add_argument("--concurrency", type=lambda text: [int(n) for n in text.split(",")], default=[1, 16],
                        help="comma-separated connection counts (1,16)")
    parser.add_argument("--data", type=Path, default=SYNTHEA, help=f"Synthea bundles ({SYNTHEA})")
    parser.add_argument("--out", help="JSON results file (bench/results/crud-TIMESTAMP.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
