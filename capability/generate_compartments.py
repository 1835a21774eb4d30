"""Developer script part: `compartments.json`, the R4 CompartmentDefinitions reduced to
{compartment type: {member resource type: [search parameter codes]}} (members without parameters are
not in the compartment and are left out; `{def}` stands for the compartment's own resource).
Called from `capability.generate.main()`.
"""

from __future__ import annotations

import json
from pathlib import Path

from hearth.capability.generate_files import write_data


def compartments(spec: Path) -> dict[str, dict[str, list[str]]]:
    result: dict[str, dict[str, list[str]]] = {}
    for path in sorted((spec / "compartmentdefinitions").glob("CompartmentDefinition-*.json")):
        definition = json.loads(path.read_text(encoding="utf-8"))
        code = definition["code"]
        if definition["id"] != code[0].lower() + code[1:]:  # e.g. the "example" definition
            continue
        result[code] = {member["code"]: member["param"] for member in definition["resource"] if member.get("param")}
    return dict(sorted(result.items()))


def generate(spec: Path) -> None:
    write_data("compartments.json", compartments(spec))
