"""What parsing and validating a client's body costs, on Synthea bodies, in CPU time of one thread.

    python -m bench.parse [--rounds 30]

Bodies: a Patient and an Observation (with a valueQuantity) from the Synthea transaction Bundle with the entry
count nearest 400, and that whole Bundle. Steps, each the minimum over interleaved rounds (so that a busy shared
machine hits every step alike) of the mean over a batch of calls:
- `parse`: capability.fhir_json.loads of the body (for the Bundle: the whole document);
- `validate`: capability.validation.validate_resource of the parsed resource (for the Bundle: of every entry's
  resource, as a transaction checks them);
- `parse+validate`: both, as a create or a transaction receives them.
Run it on two checkouts (PYTHONPATH=…) to compare before and after a change.
"""

from __future__ import annotations

import argparse
import bz2
import json
import time
from pathlib import Path
from typing import Any, Callable

from hearth.capability import fhir_json
from hearth.capability.validation import validate_resource

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"


def bodies() -> dict[str, bytes]:
    """The three bodies, as compact JSON bytes (the Bundle exactly as Synthea wrote it)."""
    nearest: tuple[int, bytes, dict] | None = None
    for path in sorted(SYNTHEA.glob("*.json.bz2")):
        raw = bz2.decompress(path.read_bytes())
        bundle = json.loads(raw)
        if bundle["type"] == "transaction" and (nearest is None or abs(len(bundle["entry"]) - 400) < nearest[0]):
            nearest = (abs(len(bundle["entry"]) - 400), raw, bundle)
    assert nearest is not None
    _, raw, bundle = nearest
    resources = [entry["resource"] for entry in bundle["entry"]]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observation = next(r for r in resources if r["resourceType"] == "Observation" and "valueQuantity" in r)
    return {"Patient": json.dumps(patient, separators=(",", ":")).encode(),
            "Observation": json.dumps(observation, separators=(",", ":")).encode(),
            f"Bundle ({len(resources)} entries)": raw}


def validate(document: Any) -> None:
    if document["resourceType"] == "Bundle":
        for entry in document["entry"]:
            validate_resource(entry["resource"])
    else:
        validate_resource(document)


def measure(steps: dict[str, Callable[[], Any]], calls: int, rounds: int) -> dict[str, float]:
    best = {name: float("inf") for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.thread_time()
            for _ in range(calls):
                step()
            best[name] = min(best[name], (time.thread_time() - started) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    for name, body in bodies().items():
        parsed = fhir_json.loads(body)
        steps = {"parse": lambda: fhir_json.loads(body), "validate": lambda: validate(parsed),
                 "parse+validate": lambda: validate(fhir_json.loads(body))}
        calls = max(1, 200_000 // len(body))
        best = measure(steps, calls, args.rounds)
        print(f"{name:24} {len(body):>9,} B  " + "  ".join(f"{step} {seconds * 1e6:>8,.1f} us"
                                                          for step, seconds in best.items()))


if __name__ == "__main__":
    main()
