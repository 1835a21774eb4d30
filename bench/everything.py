"""`Patient/[id]/$everything` latency over HTTP on the Synthea data, next to floors from the same run.

    python -m bench.everything [--db FILE] [--runs 3] [--seconds 2] [--out FILE.json]

The Synthea set (/work/shared/testdata/synthea-120, ~92k resources) is loaded with `hearth import` (untimed) into
`--db` when that file does not exist yet (default: a temporary file); an existing database is used as it is (e.g.
one grown by bench/grow.py: round 0 holds the original records, so the patient exists at every size). Then a real
`hearth serve` on it answers, one request in flight, each request for `seconds` per run, runs interleaved: the
whole record of a Synthea patient of median record size (`_count=1000`: one page), its first page (`_count=50`),
and the floors: a read of that Patient, and a plain search of its Observations (`_count=1000`). p50 and p99 per run,
medians over the runs. Target (issue 17, 2 cores): $everything p50 under 100 ms at 100k resources.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.crud import environment, get_requests
from bench.loadgen import run_load
from bench.search import PATIENT, _count_resources, fetch
from bench.server import HearthProcess

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"
SYNTHEA_IDS = "https://github.com/synthetichealth/synthea"  # the identifier system of Synthea's own ids


def requests_of(patient: str) -> dict[str, str]:
    """The measured requests, for the patient's id in this database."""
    return {
        "floor: read Patient": f"/Patient/{patient}",
        "floor: search its Observations": f"/Observation?patient=Patient/{patient}&_count=1000",
        "$everything whole record": f"/Patient/{patient}/$everything?_count=1000",
        "$everything first page": f"/Patient/{patient}/$everything?_count=50",
    }


def patient_id(server: HearthProcess) -> str:
    """The id of the median-record patient: `hearth import` assigns ids; bench/grow.py keeps Synthea's."""
    status, body = fetch(server, f"/Patient?identifier={SYNTHEA_IDS}|{PATIENT}&_elements=id")
    found = json.loads(body).get("entry") if status == 200 else None
    return found[0]["resource"]["id"] if found else PATIENT


def load(database: Path) -> float:
    """`hearth import` of the Synthea set into `database`: seconds taken."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "hearth.server.cli", "import", str(SYNTHEA), "--storage", str(database)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def describe(server: HearthProcess, path: str) -> dict[str, Any]:
    """The response's size and entries (and that a whole record is one page)."""
    status, body = fetch(server, path)
    if status != 200:
        raise RuntimeError(f"{path}: {status} {body[:300]!r}")
    page = json.loads(body)
    has_next = any(link["relation"] == "next" for link in page.get("link", ()))
    return {"bytes": len(body), "entries": len(page.get("entry", ())), "next": has_next}


async def measure(server: HearthProcess, paths: dict[str, str], runs: int, seconds: float
                  ) -> dict[str, list[dict[str, float]]]:
    requests = {name: get_requests([path]) for name, path in paths.items()}
    for next_request in requests.values():  # warm-up: page cache, statement caches, the registry
        await run_load(server.host, server.port, 1, min(1.0, seconds), next_request)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for run in range(runs):
        for name, next_request in requests.items():
            stats = await run_load(server.host, server.port, 1, seconds, next_request)
            samples[name].append({"p50_ms": 1000 * stats.percentile(0.50), "p99_ms": 1000 * stats.percentile(0.99),
                                  "requests": stats.requests, "errors": stats.errors})
            print(f"  run {run + 1}/{runs} {name:<32} p50 {samples[name][-1]['p50_ms']:8.2f} ms "
                  f"p99 {samples[name][-1]['p99_ms']:8.2f} ms", file=sys.stderr)
    return samples


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="hearth-bench-everything-") as temp:
        database = args.db or Path(temp) / "hearth.db"
        if not database.exists():
            print(f"hearth import {SYNTHEA} ({load(database):.0f} s)", file=sys.stderr)
        server = HearthProcess(database, Path(temp) / "server.log", {"HEARTH_AUDIT": "false"})
        server.start(timeout=300)
        try:
            paths = requests_of(patient_id(server))
            info = {name: describe(server, path) for name, path in paths.items()}
            samples = await measure(server, paths, args.runs, args.seconds)
        finally:
            server.stop()
        resources = _count_resources(database)
    rows = {name: {"p50_ms": statistics.median(s["p50_ms"] for s in runs),
                   "p99_ms": statistics.median(s["p99_ms"] for s in runs),
                   "errors": sum(s["errors"] for s in runs), **info[name], "runs": runs}
            for name, runs in samples.items()}
    print(f"\n{resources:,} resources; medians of {args.runs} runs\n")
    print("| request | entries | bytes | p50 ms | p99 ms |\n|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['entries']} | {row['bytes']:,} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} |")
    whole = rows["$everything whole record"]
    verdict = "met" if whole["p50_ms"] < 100 and not whole["next"] else "MISSED"
    print(f"\n$everything p50 < 100 ms: {verdict}")
    if args.out:
        args.out.write_text(json.dumps({"environment": environment(), "resources": resources, "rows": rows},
                                       indent=2))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.everything", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, help="SQLite database: Synthea is imported into it if it does not exist "
                                                       "(default: a temporary one)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per request per run (2)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
