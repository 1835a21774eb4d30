"""Search latency over HTTP on grown Synthea databases (bench/grow.py), next to a floor from the same run.

    python -m bench.search --db 100k=/tmp/g100k.db --db 1M=/tmp/g1m.db [--runs 3] [--seconds 2] [--out FILE.json]

For each database, starts `hearth serve` on it (a free port, HEARTH_BENCH_FLOOR=1), counts each query's matches
(`_summary=count`), warms up, then, run after run (interleaved, so drift on a shared machine hits all queries
alike), sends each query of the fixed mix, one request in flight, for `seconds`: p50 and p95 per run, medians
over the runs reported. The floor is `GET /_bench/static` of the mix's median response size: the same app and
dispatch without the interaction. Query values come from the original Synthea records (round 0 of
bench/grow.py), so they exist at every size; a grown database holds ~10x as many copies at 1M as at 100k.
Targets (issue 3, 2 cores): p50 < 20 ms for the selective queries at the largest size; p50 there at most 3x
the p50 at the smallest; `_summary=count` over 100,000+ matches under 200 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench.crud import environment, get_requests
from bench.loadgen import run_load
from bench.server import HearthProcess

ROOT = Path(__file__).resolve().parents[1]
PATIENT = "c1933e20-95c2-61c5-684b-7554a943648b"  # a Synthea patient of median record size, born 1982-02-17


@dataclass(frozen=True)
class Query:
    name: str
    path: str
    selective: bool  # the p50 < 20 ms target applies


MIX = (
    Query("token code", "/Observation?code=http://loinc.org|65750-2", True),
    Query("code + date", "/Observation?code=http://loinc.org|8302-2&date=ge2018-01-01", True),
    Query("patient + category", f"/Observation?patient=Patient/{PATIENT}&category=laboratory", True),
    Query("string name", "/Patient?name=kilback", True),
    Query("birthdate prefixes", "/Patient?birthdate=ge1982-01-01&birthdate=lt1983-01-01", True),
    Query("chain patient.birthdate", "/Observation?patient.birthdate=1982-02-17", True),
    Query("_has", "/Patient?_has:Observation:patient:code=65750-2", True),
    Query("_include", f"/Encounter?patient=Patient/{PATIENT}&_include=Encounter:practitioner", True),
    Query("_sort=-date (one patient)", f"/Observation?patient=Patient/{PATIENT}&_sort=-date", True),
    Query("_sort=-date (one code)", "/Observation?code=http://loinc.org|8867-4&_sort=-date", False),
    Query("_summary=count", "/Observation?category=vital-signs&_summary=count", False),
)
COUNT_QUERY = "_summary=count"


def fetch(server: HearthProcess, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    try:
        conn.request("GET", path, headers={"Accept": "application/fhir+json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def describe(server: HearthProcess, query: Query) -> dict[str, Any]:
    """The query's match count, and the size and entry count of its response."""
    status, body = fetch(server, query.path)
    if status != 200:
        raise RuntimeError(f"{query.path}: {status} {body[:300]!r}")
    page = json.loads(body)
    separator = "&" if "?" in query.path else "?"
    _, counted = fetch(server, f"{query.path}{separator}_summary=count")
    return {"matches": json.loads(counted).get("total"), "bytes": len(body), "entries": len(page.get("entry", []))}


async def latency_runs(server: HearthProcess, paths: dict[str, str], runs: int, seconds: float
                       ) -> dict[str, list[dict[str, float]]]:
    """Per name, one {p50_ms, p95_ms, requests, errors} per run."""
    requests = {name: get_requests([path]) for name, path in paths.items()}
    for name, next_request in requests.items():  # warm-up: page cache, statement caches, the registry
        await run_load(server.host, server.port, 1, min(1.0, seconds), next_request)
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for run in range(runs):
        for name, next_request in requests.items():
            stats = await run_load(server.host, server.port, 1, seconds, next_request)
            samples[name].append({"p50_ms": 1000 * stats.percentile(0.50), "p95_ms": 1000 * stats.percentile(0.95),
                                  "requests": stats.requests, "errors": stats.errors})
            print(f"  run {run + 1}/{runs} {name:<28} p50 {samples[name][-1]['p50_ms']:8.2f} ms "
                  f"p95 {samples[name][-1]['p95_ms']:8.2f} ms ({stats.requests} requests)", file=sys.stderr)
    return samples


def summarise(samples: list[dict[str, float]]) -> dict[str, float]:
    return {"p50_ms": statistics.median(s["p50_ms"] for s in samples),
            "p95_ms": statistics.median(s["p95_ms"] for s in samples),
            "requests": sum(s["requests"] for s in samples), "errors": sum(s["errors"] for s in samples)}


async def bench_database(label: str, database: Path, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hearth-bench-search-") as temp:
        server = HearthProcess(database, Path(temp) / "server.log")
        server.start(timeout=300)
        try:
            info = {query.name: describe(server, query) for query in MIX}
            floor_size = int(statistics.median(item["bytes"] for item in info.values()))
            paths = {"floor": f"/_bench/static?size={floor_size}", **{query.name: query.path for query in MIX}}
            print(f"{label}: hearth serve on {database} at {server.base_url}; floor {floor_size} B", file=sys.stderr)
            samples = await latency_runs(server, paths, args.runs, args.seconds)
        finally:
            server.stop()
    resources = _count_resources(database)
    rows = {name: {**summarise(runs), **info.get(name, {}), "runs": runs} for name, runs in samples.items()}
    return {"label": label, "database": str(database), "resources": resources, "floor_bytes": floor_size,
            "rows": rows}


def _count_resources(database: Path) -> int:
    import sqlite3
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM resources WHERE deleted = 0").fetchone()[0]


def targets(query: Query, small: dict[str, Any], large: dict[str, Any]) -> list[str]:
    """Which targets of issue 3 this query meets at the largest size."""
    verdicts = []
    p50 = large["rows"][query.name]["p50_ms"]
    if query.selective:
        verdicts.append(f"p50<20ms {'met' if p50 < 20 else 'MISSED'}")
    if small is not large:
        ratio = p50 / small["rows"][query.name]["p50_ms"]
        verdicts.append(f"≤3× {'met' if ratio <= 3 else 'MISSED'}")
    if query.name == COUNT_QUERY:
        matches = large["rows"][query.name]["matches"] or 0
        verdicts.append(f"<200ms over {matches:,} {'met' if p50 < 200 else 'MISSED'}")
    return verdicts


def table(results: list[dict[str, Any]]) -> str:
    head = "| query |" + "".join(f" matches {r['label']} | p50 ms {r['label']} | p95 ms {r['label']} |"
                                 for r in results)
    if len(results) > 1:
        head += f" p50 {results[-1]['label']}/{results[0]['label']} |"
    head += " targets |"
    lines = [head, "|---|" + "---:|" * (3 * len(results) + (len(results) > 1)) + "---|"]
    for name in ["floor", *(query.name for query in MIX)]:
        query = next((q for q in MIX if q.name == name), None)
        cells = []
        for result in results:
            row = result["rows"][name]
            matches = "–" if row.get("matches") is None else f"{row['matches']:,}"
            cells.append(f" {matches} | {row['p50_ms']:.2f} | {row['p95_ms']:.2f} |")
        line = f"| {'floor: static ' + str(results[-1]['floor_bytes']) + ' B' if query is None else name} |"
        line += "".join(cells)
        if len(results) > 1:
            line += f" {results[-1]['rows'][name]['p50_ms'] / results[0]['rows'][name]['p50_ms']:.2f} |"
        line += (" " + ", ".join(targets(query, results[0], results[-1])) if query else "") + " |"
        lines.append(line)
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    results = [await bench_database(label, path, args) for label, path in args.db]
    result = {"command": " ".join(["python -m bench.search", *sys.argv[1:]]),
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "environment": environment(),
              "runs": args.runs, "seconds": args.seconds,
              "queries": {query.name: {"path": query.path, "selective": query.selective} for query in MIX},
              "databases": results}
    out = Path(args.out or ROOT / "bench" / "results" / f"search-{time.strftime('%Y%m%d-%H%M%S')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(results))
    sizes = ", ".join(f"{r['label']} = {r['resources']:,} resources" for r in results)
    print(f"\n{result['command']} — {sizes}; median of {args.runs} runs of {args.seconds:g} s, one request in "
          f"flight; JSON: {out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", required=True, metavar="LABEL=PATH",
                        type=lambda text: (text.partition("=")[0], Path(text.partition("=")[2])),
                        help="a grown database (bench/grow.py) and its label; smallest first, repeatable")
    parser.add_argument("--runs", type=int, default=3, help="runs per query; medians are reported (3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run (2)")
    parser.add_argument("--out", help="JSON results file (bench/results/search-TIMESTAMP.json)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(uvloop.run(main(parse_args())))
