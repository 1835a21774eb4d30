"""Bulk Data `$export` served by a real `hearth serve`: resources/s and the server's peak RSS at two sizes, against
a floor measured in the same run (raw SQLite reads of the same current bodies, written to one NDJSON file per type
in a plain loop).

    python -m bench.export --runs 3 --small 30
    python -m bench.export --runs 3 --db 100k=/tmp/g100k.db --db 1M=/tmp/g1m.db   # databases grown by bench/grow.py

The small size is the first `--small` Synthea bundles (plus the shared ones), the large one all of them (~92,000
resources); or, with `--db`, each database named (used as it is). Each size has its own server process, so its
peak RSS is its own. `--heap` adds, per size, one export run in this process under tracemalloc: the peak of the
Python heap while it runs (what the export itself holds, without SQLite's page caches).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.connectors import bundles
from bench.server import HearthProcess

TARGET = 15_000  # resources/s on 2 cores (issue 17)


def load(files: list[Path], database: Path) -> None:
    subprocess.run([sys.executable, "-m", "hearth.server.cli", "import", *map(str, files), "--storage", str(database)],
                   check=True, capture_output=True)


def export_once(base_url: str) -> tuple[int, float]:
    """One system-level `$export`, kick-off to manifest: (resources written, seconds)."""
    started = time.perf_counter()
    kick = urllib.request.Request(f"{base_url}/$export", headers={"Prefer": "respond-async",
                                                                  "Accept": "application/fhir+json"})
    with urllib.request.urlopen(kick) as response:
        status_url = response.headers["Content-Location"]
    while True:
        with urllib.request.urlopen(status_url) as response:
            if response.status == 200:
                manifest = json.loads(response.read())
                break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    delete = urllib.request.Request(status_url, method="DELETE")
    urllib.request.urlopen(delete).close()  # the files go: the next run writes its own
    return sum(item["count"] for item in manifest["output"]), seconds


def floor_once(database: Path, folder: Path) -> tuple[int, float]:
    """Raw SQLite reads of the current bodies, one NDJSON file per type, in a plain loop: (resources, seconds)."""
    import sqlite3
    started = time.perf_counter()
    conn = sqlite3.connect(database)
    count = 0
    files: dict[str, Any] = {}
    try:
        rows = conn.execute("SELECT r.type, h.body FROM resources r JOIN history h ON h.type = r.type AND "
                            "h.id = r.id AND h.version_id = r.version_id WHERE r.deleted = 0")
        for resource_type, body in rows:
            out = files.get(resource_type)
            if out is None:
                out = files[resource_type] = open(folder / f"{resource_type}.ndjson", "wb")
            out.write(body)
            out.write(b"\n")
            count += 1
    finally:
        for out in files.values():
            out.close()
        conn.close()
    return count, time.perf_counter() - started


def heap_peak(database: Path, work: Path) -> float:
    """One system-level export in this process (the app over ASGI): the Python heap's peak above its level at
    kick-off, in MB (tracemalloc; SQLite's page caches are C allocations outside it)."""
    import asyncio
    import tracemalloc

    import httpx

    from hearth.server.app import create_app
    from hearth.server.settings import Settings

    async def run() -> float:
        app = create_app(Settings(storage=str(database), base_url="http://bench", export_poll=0.05,
                                  export_dir=str(work / "heap-exports")))
        await app.startup()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                tracemalloc.start()
                base = tracemalloc.get_traced_memory()[0]
                kick = await client.get("/$export", headers={"Prefer": "respond-async"})
                status = kick.headers["content-location"]
                while (await client.get(status)).status_code == 202:
                    await asyncio.sleep(0.2)
                peak = tracemalloc.get_traced_memory()[1] - base
                tracemalloc.stop()
                await client.delete(status)
        finally:
            await app.shutdown()
        return peak / 2**20
    return asyncio.run(run())


class Peaks(threading.Thread):
    """The peak resident memory of a process, sampled every 50 ms from /proc: all of it (VmRSS, which counts the
    pages of the SQLite file the readers map, so it follows the database's size) and the anonymous part (RssAnon:
    what the process itself holds)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.rss, self.anon = pid, 0.0, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in text.splitlines()
                      if line.startswith(("VmRSS:", "RssAnon:"))}
            self.rss = max(self.rss, fields.get("VmRSS", 0.0))
            self.anon = max(self.anon, fields.get("RssAnon", 0.0))


def measure(database: Path, runs: int, work: Path, label: str) -> dict[str, Any]:
    server = HearthProcess(database, work / f"{label}.log", {"HEARTH_EXPORT_DIR": str(work / f"{label}-exports"),
                                                             "HEARTH_EXPORT_POLL": "0.05"})
    server.start()
    peaks = Peaks(server.process.pid)
    peaks.start()
    exports, floors = [], []
    try:
        for _ in range(runs):  # interleaved, so drift hits both alike
            exports.append(export_once(server.base_url))
            floor_dir = work / f"{label}-floor"
            floor_dir.mkdir(exist_ok=True)
            floors.append(floor_once(database, floor_dir))
    finally:
        peaks.done.set()
        server.stop()
    rate = statistics.median(count / seconds for count, seconds in exports)
    floor = statistics.median(count / seconds for count, seconds in floors)
    return {"size": label, "resources": exports[0][0], "export_per_s": rate, "floor_per_s": floor,
            "ratio": rate / floor, "peak_rss_mb": peaks.rss, "peak_anon_mb": peaks.anon, "runs": runs,
            "export_seconds": [seconds for _, seconds in exports], "floor_seconds": [seconds for _, seconds in floors]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", type=int, default=30, help="Synthea bundles of the small size")
    parser.add_argument("--db", action="append", default=[], metavar="LABEL=FILE",
                        help="measure this SQLite database as it is (repeatable) instead of loading Synthea")
    parser.add_argument("--heap", action="store_true", help="also the Python heap's peak of one export per size")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-export-") as folder:
        work = Path(folder)
        sizes = [tuple(item.split("=", 1)) for item in args.db]
        if not sizes:
            for label, files in (("small", bundles(args.small)), ("large", bundles(0))):
                load(files, work / f"{label}.db")
                sizes.append((label, str(work / f"{label}.db")))
        results = [measure(Path(database), args.runs, work, label) for label, database in sizes]
        for row, (_, database) in zip(results, sizes):
            row["heap_peak_mb"] = heap_peak(Path(database), work) if args.heap else None
    print(f"| size | resources | $export res/s | floor res/s | ratio | server peak RSS MB | peak anon. MB "
          f"| Python heap peak MB | target {TARGET:,}/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in results:
        met = "met" if row["export_per_s"] >= TARGET else "not met"
        print(f"| {row['size']} | {row['resources']:,} | {row['export_per_s']:,.0f} | {row['floor_per_s']:,.0f} | "
              f"{row['ratio']:.2f} | {row['peak_rss_mb']:.0f} | {row['peak_anon_mb']:.0f} | "
              f"{'-' if row['heap_peak_mb'] is None else format(row['heap_peak_mb'], '.1f')} | {met} |")
    out = args.out or Path(__file__).parent / "results" / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
