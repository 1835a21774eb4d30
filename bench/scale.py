"""Scale out on one machine: reads, creates and the search mix on `hearth serve --workers 1` and `--workers N`.

    python -m bench.scale --db /tmp/g100k.db [--workers 2] [--runs 3] [--seconds 1.5] [--out FILE.json]

Copies the database once per server (neither sees the other's creates), starts `hearth serve --workers 1` and
`--workers N` on the copies (HEARTH_AUDIT=false, as bench/crud.py's floor server: this measures the server, not
the audit trail), PUTs the 120 Synthea Patients into each, then, run after run, interleaved across servers,
connection counts and scenarios so that drift on a shared machine hits all alike: the static floor
(`GET /_bench/static` of the median Patient's size), reads (`GET Patient/{id}`) and each query of bench/search.py's
mix at 1, 8, 16 (reads and floor only) and 32 connections; then, the same way, creates (`POST Observation`,
Synthea bodies) last, so that the searches run on the database as copied. Reported, medians over the runs: req/s
per server; each scenario's rate at c connections over its 1-connection rate on the same server; the N-worker rate
over the 1-worker rate. The floor's own ratios say how far the machine itself scales in the same run. Targets
(issue 18, 2 cores): every search at 8 connections at least 1.5x its 1-connection rate; reads at 16 connections at
least 1.3x the single process's; creates no worse.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import uvloop

from bench.crud import SYNTHEA, environment, get_requests, measure, post_requests, seed, synthea_bodies
from bench.search import MIX
from bench.server import HearthProcess

ROOT = Path(__file__).resolve().parents[1]
WIDE = (1, 8, 16, 32)  # connections for the floor and reads (issue 18 judges reads at 16)
NARROW = (1, 8, 32)  # for searches and creates


async def _runs(servers: dict[int, HearthProcess], scenarios: dict[str, tuple[Callable[[], bytes], tuple[int, ...]]],
                args: argparse.Namespace) -> dict[str, list[float]]:
    """Req/s per run, keyed `scenario|workers|connections`."""
    for server in servers.values():  # warm-up: page cache, statement caches, every process's registries
        for requests, _ in scenarios.values():
            await measure(server, "warm-up", 8, 0.3, requests)
    rates: dict[str, list[float]] = {}
    for run in range(args.runs):
        for name, (requests, connections) in scenarios.items():
            for concurrency in connections:
                for workers, server in servers.items():
                    sample = await measure(server, name, concurrency, args.seconds, requests)
                    rates.setdefault(f"{name}|{workers}|{concurrency}", []).append(sample.rate)
                    print(f"  run {run + 1}/{args.runs} {name:<28} workers {workers} c={concurrency:<3} "
                          f"{sample.rate:>8,.0f}/s p50 {sample.p50_ms:.2f} ms errors {sample.errors}", file=sys.stderr)
    return rates


def _rows(medians: dict[str, float], names: list[str], workers: int) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        for concurrency in (WIDE if name in ("static", "read") else NARROW):
            one, many = medians[f"{name}|1|{concurrency}"], medians[f"{name}|{workers}|{concurrency}"]
            rows.append({"scenario": name, "connections": concurrency, "rate_1": one, "rate_n": many,
                         "scaling_1": one / medians[f"{name}|1|1"], "scaling_n": many / medians[f"{name}|{workers}|1"],
                         "n_over_1": many / one})
    return rows


def table(rows: list[dict[str, Any]], workers: int) -> str:
    lines = [f"| scenario | conn. | req/s, 1 worker | req/s, {workers} workers | vs 1 conn., 1 worker "
             f"| vs 1 conn., {workers} workers | {workers} workers / 1 |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['scenario']} | {row['connections']} | {row['rate_1']:,.0f} | {row['rate_n']:,.0f} "
                     f"| {row['scaling_1']:.2f} | {row['scaling_n']:.2f} | {row['n_over_1']:.2f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    patients, observations = synthea_bodies(SYNTHEA, 2000)
    with tempfile.TemporaryDirectory(prefix="hearth-bench-scale-", dir=args.temp) as temp:
        folder = Path(temp)
        servers: dict[int, HearthProcess] = {}
        for workers in (1, args.workers):
            shutil.copyfile(args.db, folder / f"w{workers}.db")
            servers[workers] = HearthProcess(folder / f"w{workers}.db", folder / f"w{workers}.log",
                                             {"HEARTH_WORKERS": str(workers), "HEARTH_AUDIT": "false"})
        try:
            for server in servers.values():
                server.start(timeout=300)
            sizes = [seed(server, patients) for server in servers.values()][0]
            size = int(statistics.median(sizes))
            reads = [f"/Patient/{patient['id']}" for patient in patients]
            print(f"workers 1 and {args.workers}; {args.runs} runs of {args.seconds:g} s", file=sys.stderr)
            rates = await _runs(servers, {"static": (get_requests([f"/_bench/static?size={size}"]), WIDE),
                                          "read": (get_requests(reads), WIDE),
                                          **{query.name: (get_requests([query.path]), NARROW) for query in MIX}},
                                args)
            rates.update(await _runs(servers, {"create": (post_requests("/Observation", observations), NARROW)}, args))
        finally:
            for server in servers.values():
                server.stop()
    medians = {key: statistics.median(values) for key, values in rates.items()}
    rows = _rows(medians, ["static", "read", *(query.name for query in MIX), "create"], args.workers)
    result = {"command": " ".join(["python -m bench.scale", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment(),
              "runs": args.runs, "seconds": args.seconds, "workers": args.workers, "rows": rows, "rates": rates}
    out = Path(args.out or ROOT / "bench" / "results" / f"scale-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(rows, args.workers))
    print(f"\n{result['command']} — medians of {args.runs} runs of {args.seconds:g} s; JSON: {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True, help="a grown database (bench/grow.py), copied per server")
    parser.add_argument("--workers", type=int, default=2, help="server processes of the second server (2)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; medians are reported (3)")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each run (1.5)")
    parser.add_argument("--temp", help="folder for the database copies (the system's temporary folder)")
    parser.add_argument("--out", help="JSON results file (bench/results/scale-TIMESTAMP.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
