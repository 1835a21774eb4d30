"""Micro-benchmark of the HL7 v2 -> FHIR conversion: median time of `convert` (and of parsing alone) per message.

    python bench/hl7v2_convert.py [FILE.hl7 ...] [--runs 200]

Without files: LAB-ORU-1.hl7 and edge case oru-r01-obx-value-types.hl7 from the shared test data."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from hearth.connectors.hl7v2 import frame
from hearth.connectors.hl7v2.convert import convert
from hearth.connectors.hl7v2.maps import maps
from hearth.connectors.hl7v2.parse import parse

DATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "hl7v2"
DEFAULT = (DATA / "LAB-ORU-1.hl7", DATA / "edge-cases" / "oru-r01-obx-value-types.hl7")


def timings_ms(action, runs: int) -> tuple[float, float]:
    """The median and the fastest wall time of `action()` over `runs` calls, in milliseconds (after a warm-up
    call); the fastest is the steadier figure on a shared machine."""
    action()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    zone = ZoneInfo("America/Chicago")
    for path in args.files:
        decoded = frame.decode(frame.normalise(path.read_bytes()))
        assert isinstance(decoded, tuple), decoded
        text, charset = decoded
        header = frame.parse_header(text, charset)
        event = maps().event(header.message_type, header.trigger_event)
        tree = maps().structure(event.tree)
        whole = timings_ms(lambda: convert(text, charset, connector="feed", timezone=zone), args.runs)
        alone = timings_ms(lambda: parse(text, charset, tree), args.runs)
        print(f"{path.name}: convert {whole[0]:.2f} ms (fastest {whole[1]:.2f}), "
              f"parse {alone[0]:.2f} ms (fastest {alone[1]:.2f}); medians of {args.runs} runs")


if __name__ == "__main__":
    main()
