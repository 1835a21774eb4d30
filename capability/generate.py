"""Developer script: generate capability/data/*.json from the official R4 definitions in ../shared/spec/r4.

Run `python -m capability.generate [SPEC_DIR]`. The product reads only the generated files, never ../shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from capability.generate_terminology import write_terminology

DATA = Path(__file__).parent / "data"


def load_bundle(spec: Path, name: str) -> list[dict]:
    with open(spec / name, encoding="utf-8") as handle:
        return [entry["resource"] for entry in json.load(handle)["entry"]]


def resource_types(spec: Path) -> list[str]:
    """Every concrete R4 resource type, sorted."""
    return sorted(
        sd["type"] for sd in load_bundle(spec, "profiles-resources.json")
        if sd["resourceType"] == "StructureDefinition" and sd.get("kind") == "resource"
        and sd.get("derivation") == "specialization" and not sd.get("abstract")
    )


def write_data(name: str, value: object) -> None:
    DATA.mkdir(exist_ok=True)
    with open(DATA / name, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=1, sort_keys=False)
        handle.write("\n")


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    spec = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "shared" / "spec" / "r4"
    write_data("resource_types.json", resource_types(spec))
    from capability.generate_structure import structure  # imported here: it imports this module

    write_data("structure.json", structure(spec))
    from capability.generate_search import generate as generate_search  # imports this module too

    generate_search(spec)
    write_terminology(spec, DATA)
    from capability.generate_bindings import generate as generate_bindings  # imports this module too

    generate_bindings(spec)  # after write_terminology: it expands the ValueSets from the shipped terminology
    from capability.generate_compartments import generate as generate_compartments  # imports this module too

    generate_compartments(spec)


if __name__ == "__main__":
    main()
