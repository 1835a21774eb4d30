"""Developer script: which top-level elements of each R4 resource type are summary / mandatory."""

from __future__ import annotations

from pathlib import Path

from hearth.capability.generate_files import load_bundle, write_data


def summary_elements(spec: Path) -> dict[str, dict[str, list[str]]]:
    """{type: {"summary": [names], "mandatory": [names]}}; a choice element is named `value[x]`."""
    out: dict[str, dict[str, list[str]]] = {}
    for sd in load_bundle(spec, "profiles-resources.json"):
        if sd["resourceType"] != "StructureDefinition" or sd.get("kind") != "resource" or sd.get("abstract"):
            continue
        summary, mandatory = [], []
        for element in sd["snapshot"]["element"]:
            path = element["path"].split(".")
            if len(path) != 2:
                continue
            if element.get("isSummary"):
                summary.append(path[1])
            if element.get("min", 0) > 0:
                mandatory.append(path[1])
        out[sd["type"]] = {"summary": summary, "mandatory": mandatory}
    return out


def main(spec: Path) -> None:
    write_data("summary_elements.json", summary_elements(spec))
