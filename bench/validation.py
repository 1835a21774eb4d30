"""Cost of `validate_resource` per resource, per resource type, over every Synthea resource, with and without the
required-binding checks.

    python -m bench.validation [--runs 5]

Loads every resource of ../shared/testdata/synthea-120 (92,114), and a second copy of capability/validation.py
whose element table has no bindings attached (the same code otherwise). Each resource is validated once by each
(a warm-up: first-use costs such as ValueSet expansions), then `--runs` times by one and the other in turn, and
the fastest of each is kept: the two are timed microseconds apart, so that a busy shared machine slows both alike,
and the minimum drops the runs the scheduler interrupted. Reported per type: the mean of these minima in µs per
resource with and without bindings and the difference; then the same over all resources.
"""

from __future__ import annotations

import argparse
import bz2
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from hearth.capability import bindings, fhir_json, validation

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"


def by_type() -> dict[str, list[dict]]:
    resources: dict[str, list[dict]] = {}
    for path in sorted(SYNTHEA.glob("*.json.bz2")):
        for entry in fhir_json.loads(bz2.decompress(path.read_bytes()))["entry"]:
            resources.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return resources


def without_bindings() -> ModuleType:
    """A second capability.validation, loaded while `required_bindings` answers no binding."""
    spec = importlib.util.spec_from_file_location("validation_without_bindings", validation.__file__)
    module = importlib.util.module_from_spec(spec)
    original = bindings.required_bindings
    bindings.required_bindings = dict  # type: ignore[assignment]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    finally:
        bindings.required_bindings = original
    return module


def fastest(validate: Callable[[dict], None], resource: dict) -> int:
    """Nanoseconds of one validation."""
    start = time.perf_counter_ns()
    validate(resource)
    return time.perf_counter_ns() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    resources = by_type()
    variants = {"with": validation.validate_resource, "without": without_bindings().validate_resource}
    best = {variant: {name: 0.0 for name in resources} for variant in variants}  # sums of per-resource minima, µs
    for name, items in resources.items():
        for resource in items:
            for validate in variants.values():
                validate(resource)  # warm-up: first-use costs such as ValueSet expansions
            times = {variant: [] for variant in variants}
            for _ in range(args.runs):
                for variant, validate in variants.items():
                    times[variant].append(fastest(validate, resource))
            for variant in variants:
                best[variant][name] += min(times[variant]) / 1000
    count = sum(len(items) for items in resources.values())
    print(f"{'type':<26} {'resources':>9} {'with µs':>8} {'without':>8} {'cost µs':>8}")
    for name, items in sorted(resources.items()):
        with_, without = best["with"][name] / len(items), best["without"][name] / len(items)
        print(f"{name:<26} {len(items):>9,} {with_:>8.1f} {without:>8.1f} {with_ - without:>8.2f}")
    with_, without = sum(best["with"].values()) / count, sum(best["without"].values()) / count
    print(f"{'all (mean per resource)':<26} {count:>9,} {with_:>8.1f} {without:>8.1f} {with_ - without:>8.2f}")


if __name__ == "__main__":
    main()
