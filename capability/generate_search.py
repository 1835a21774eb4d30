"""Developer script part: capability/data/search_parameters.json, every R4 SearchParameter reduced to what
the registry reads. Called from `capability.generate.main()`. (The FHIRPath compiler's element model is
structure.json, see capability/generate_structure.py.)
"""

from __future__ import annotations

from pathlib import Path

from capability.generate import load_bundle, write_data

def search_parameters(spec: Path) -> list[dict]:
    """The SearchParameters, compact: only the fields the registry reads, empty ones left out."""
    params = []
    for sp in load_bundle(spec, "search-parameters.json"):
        item = {
            "url": sp["url"], "code": sp["code"], "base": sp["base"], "type": sp["type"],
            "expression": sp.get("expression"), "target": sp.get("target"), "modifier": sp.get("modifier"),
            "comparator": sp.get("comparator"), "multipleOr": sp.get("multipleOr"),
            "multipleAnd": sp.get("multipleAnd"), "chain": sp.get("chain"),
            "component": [[c["definition"], c["expression"]] for c in sp.get("component", [])] or None,
        }
        params.append({key: value for key, value in item.items() if value is not None})
    return params


def generate(spec: Path) -> None:
    write_data("search_parameters.json", search_parameters(spec))
