"""How fast a connector fills an empty Hearth from an upstream, and whether its memory stays flat.

    python -m bench.connectors [--bundles 0] [--small 30] [--out FILE.json]

The Synthea bundles (all of them with `--bundles 0`: ~92,000 resources) are loaded with `hearth import` into an
upstream database. The floor is `hearth import` of the same resources as NDJSON files, one per type, into an empty
database: stored one by one at their ids, as a connector stores them, with no upstream in between (a Bundle import
is faster: each patient's transaction Bundle is one commit). Then, for a small and the full set, an empty Hearth is
filled by `hearth connector run NAME --once` (its own process, so its peak memory is its own):
- `fhir-poll` from a real `hearth serve` on the upstream database (pages of 1,000, every type present; the
  upstream's CPU time is reported: it runs on the same 2 cores, which an EHR elsewhere would not);
- `bulk-export` from the fake upstream EHR of the tests (tests/fake_ehr.py, which serves Bulk Data 2.0 from memory
  in this process). Hearth serves `$export` itself now, but the bulk sync keeps this upstream: it measures the
  connector (the fake serves NDJSON from memory at little cost), comparably with the earlier figures.
Reported: resources/s of each sync and its ratio to the import floor, and the connector process's peak RSS at
both sizes, with its anonymous part (RssAnon: what the process allocated, without the database pages SQLite maps
from the file, which grow with the database and the kernel may drop at any time). Flat memory: the full sync's
anonymous peak close to the small one's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.server import HearthProcess

ROOT = Path(__file__).resolve().parents[1]
SYNTHEA = ROOT.parent / "shared" / "testdata" / "synthea-120"
TARGETS = {"fhir-poll": 800, "bulk-export": 1200}  # resources/s on 2 cores (issue 15)


def bundles(count: int) -> list[Path]:
    files = sorted(SYNTHEA.glob("*.json.bz2"))
    first = [f for f in files if f.name.startswith("0-")]
    rest = [f for f in files if not f.name.startswith("0-")]
    return first + (rest[:count] if count else rest)


def stored_resources(database: Path) -> list[dict[str, Any]]:
    """What the upstream Hearth holds (its current versions), for the fake EHR to export the same."""
    import sqlite3

    from hearth.capability import fhir_json
    conn = sqlite3.connect(database)
    try:
        rows = conn.execute("SELECT h.body FROM resources r JOIN history h ON h.type = r.type AND h.id = r.id AND "
                            "h.version_id = r.version_id WHERE r.deleted = 0").fetchall()
    finally:
        conn.close()
    return [fhir_json.loads(bytes(row[0]), trusted=True) for row in rows]


def load_upstream(files: list[Path], database: Path) -> None:
    subprocess.run([sys.executable, "-m", "hearth.server.cli", "import", *map(str, files), "--storage", str(database)],
                   check=True, capture_output=True)


def import_floor(resources: list[dict[str, Any]], folder: Path) -> tuple[int, float]:
    """`hearth import` of these resources as NDJSON (a file per type) into an empty database: (count, seconds)."""
    from hearth.capability import fhir_json
    files: dict[str, list[bytes]] = {}
    for resource in resources:
        files.setdefault(resource["resourceType"], []).append(fhir_json.dumps(resource))
    ndjson = folder / "ndjson"
    ndjson.mkdir(exist_ok=True)
    for resource_type, lines in files.items():
        (ndjson / f"{resource_type}.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    database = folder / "floor.db"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hearth.server.cli", "import", str(ndjson), "--storage", str(database)],
                   check=True, capture_output=True)
    elapsed = time.perf_counter() - started
    for path in [*ndjson.iterdir(), *folder.glob("floor.db*")]:
        path.unlink()
    return len(resources), elapsed


async def sync(kind: str, base: str, types: list[str], folder: Path, name: str) -> dict[str, Any]:
    """One `hearth connector run --once` into an empty database: resources stored, seconds, peak RSS (MB)."""
    table = {"kind": kind, "base": base, "types": types, "page_size": 1000, "concurrency": 4, "rate": 1000,
             "timeout": 120}
    sys.path.insert(0, str(ROOT / "tests"))
    from connector_helpers import toml  # the tests' TOML writer: one place that writes connector files
    (folder / f"{name}.toml").write_text(toml({name: table}))
    env = {**os.environ, "HEARTH_STORAGE": str(folder / f"{name}.db"), "HEARTH_CONNECTORS": str(folder / f"{name}.toml")}
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "hearth.server.cli", "connector", "run",
                                                   name, "--once", env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"{kind} sync failed: {err.decode()[-2000:]} {out.decode()[-2000:]}")
    status = json.loads(out)
    return {"kind": kind, "stored": status["counters"]["stored"], "rejected": status["counters"]["rejected"],
            "seconds": elapsed, "rate": status["counters"]["stored"] / elapsed,
            "peak_rss_mb": _peak_rss(process.pid)[0], "peak_anon_mb": _peak_rss(process.pid)[1]}


_PEAKS: dict[int, tuple[float, float]] = {}  # pid -> peak (RSS, anonymous RSS), MB


def _peak_rss(pid: int) -> tuple[float, float]:
    return _PEAKS.get(pid, (float("nan"), float("nan")))


async def watch_rss(stop: asyncio.Event) -> None:
    """The peak resident memory of each `hearth connector` process, sampled every 50 ms from /proc."""
    while not stop.is_set():
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                cmdline = (status.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if b"connector\x00run" not in cmdline:
                continue
            fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in text.splitlines()
                      if line.startswith(("VmRSS:", "RssAnon:"))}
            pid = int(status.parent.name)
            rss, anon = _PEAKS.get(pid, (0.0, 0.0))
            _PEAKS[pid] = (max(rss, fields.get("VmRSS", 0.0)), max(anon, fields.get("RssAnon", 0.0)))
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_ehr import FakeEhr
    rows = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_rss(stop))
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        for size in (args.small, args.bundles):
            files = bundles(size)
            label = f"{len(files) - 2} bundles"
            database = folder / f"upstream-{size}.db"
            load_upstream(files, database)
            loaded = stored_resources(database)
            types = sorted({r["resourceType"] for r in loaded})
            count, seconds = import_floor(loaded, folder)
            floor = count / seconds
            print(f"  {label}: hearth import (NDJSON) {count:,} resources in {seconds:.1f} s ({floor:,.0f}/s)",
                  flush=True)
            upstream = HearthProcess(database, folder / f"upstream-{size}.log")
            upstream.start()
            try:
                serving = upstream.cpu_seconds()
                polled = await sync("fhir-poll", upstream.base_url, types, folder, f"poll{size}")
                polled["upstream_cpu_s"] = upstream.cpu_seconds() - serving  # the upstream shares the 2 cores
            finally:
                upstream.stop()
            ehr = FakeEhr(page_size=1000)
            ehr.export_file_lines = 10_000
            ehr.export_polls = 1
            for resource in loaded:
                ehr.put(resource)
            await ehr.start()
            try:
                exported = await sync("bulk-export", ehr.base, types, folder, f"bulk{size}")
            finally:
                await ehr.stop()
            for row in (polled, exported):
                row.update(size=label, resources=count, floor=floor, ratio=row["rate"] / floor)
                print(f"  {label}: {row['kind']} {row['stored']:,} stored in {row['seconds']:.1f} s "
                      f"({row['rate']:,.0f}/s, {row['ratio']:.2f} of import), peak RSS {row['peak_rss_mb']:.0f} MB "
                      f"({row['peak_anon_mb']:.0f} MB anonymous)"
                      + (f"; the upstream server used {row['upstream_cpu_s']:.0f} CPU s" if "upstream_cpu_s" in row
                         else ""),
                      flush=True)
                rows.append(row)
    stop.set()
    await watcher
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=0, help="patient bundles of the full set (0: all)")
    parser.add_argument("--small", type=int, default=30, help="patient bundles of the small set")
    parser.add_argument("--out", type=Path, help="write the rows as JSON")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    print("| sync | set | resources | s | resources/s | floor (NDJSON import)/s | ratio | peak RSS MB | of it anonymous | "
          "target |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        target = TARGETS[row["kind"]]
        met = "met" if row["rate"] >= target else "MISSED"
        print(f"| {row['kind']} | {row['size']} | {row['stored']:,} | {row['seconds']:.1f} | {row['rate']:,.0f} | "
              f"{row['floor']:,.0f} | {row['ratio']:.2f} | {row['peak_rss_mb']:.0f} | {row['peak_anon_mb']:.0f} | "
              f">= {target}/s: {met} |")
    out = args.out or ROOT / "bench" / "results" / f"connectors-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"\npython -m bench.connectors {' '.join(argv or sys.argv[1:])} — JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
