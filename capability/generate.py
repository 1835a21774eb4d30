"""Developer script: generate capability/data/*.json from the official R4 definitions in ../shared/spec/r4.

Run `python -m hearth.capability.generate [SPEC_DIR]`. The product reads only the generated files, never ../shared.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hearth.capability.generate_bindings import generate as generate_bindings
from hearth.capability.generate_compartments import generate as generate_compartments
from hearth.capability.generate_files import DATA, load_bundle, write_data
from hearth.capability.generate_search import generate as generate_search
from hearth.capability.generate_structure import structure
from hearth.capability.generate_terminology import write_terminology


def resource_types(spec: Path) -> list[str]:
    """Every concrete R4 resource type, sorted."""
    return sorted(
        sd["type"] for sd in load_bundle(spec, "profiles-resources.json")
        if sd["resourceType"] == "StructureDefinition" and sd.get("kind") == "resource"
        and sd.get("derivation") == "specialization" and not sd.get("abstract")
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    spec = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "shared" / "spec" / "r4"
    write_data("resource_types.json", resource_types(spec))
    write_data("structure.json", structure(spec))
    generate_search(spec)
    write_terminology(spec, DATA)
    generate_bindings(spec)  # after write_terminology: it expands the ValueSets from the shipped terminology
    generate_compartments(spec)


if __name__ == "__main__":
    main()
