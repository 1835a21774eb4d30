"""Bulk Data `$export` served by a real `hearth serve`: resources/s and the server's peak RSS at two sizes, against
a floor measured in the same run (raw SQLite reads of the same current bodies, written to one NDJSON file per type
in a plain loop).

    python -m bench.export --runs 3 --small 30

The small size is the first `--small` Synthea bundles (plus the shared ones), the large one all of them (~92,000
resources); each size has its own database and its own server process, so its peak RSS (VmHWM) is its own.
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


def measure(files: list[Path], runs: int, work: Path, label: str) -> dict[str, Any]:
    database = work / f"{label}.db"
    load(files, database)
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
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-export-") as folder:
        work = Path(folder)
        results = [measure(bundles(args.small), args.runs, work, "small"),
                   measure(bundles(0), args.runs, work, "large")]
    print(f"| size | resources | $export res/s | floor res/s | ratio | server peak RSS MB | peak anon. MB | target {TARGET:,}/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in results:
        met = "met" if row["export_per_s"] >= TARGET else "not met"
        print(f"| {row['size']} | {row['resources']:,} | {row['export_per_s']:,.0f} | {row['floor_per_s']:,.0f} | "
              f"{row['ratio']:.2f} | {row['peak_rss_mb']:.0f} | {row['peak_anon_mb']:.0f} | {met} |")
    out = args.out or Path(__file__).parent / "results" / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
