"""Developer script part: the search data files, from the official R4 definitions.

- `search_parameters.json`: every R4 SearchParameter reduced to what the registry reads;
- `search_parameters_code_systems.json`: the code system implied by the required binding of each `code`
  element (`Patient.gender` -> http://hl7.org/fhir/administrative-gender), so a token index entry of a
  plain code carries its system.
Called from `capability.generate.main()`. (The element model FHIRPath navigates is structure.json, read by
capability/elements.py, which also serves the code systems written here.)
"""

from __future__ import annotations

from pathlib import Path

from hearth.capability.generate_files import load_bundle, write_data
from hearth.capability.generate_terminology import PACKAGE, package_resources

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


def _single_system(valueset: dict | None) -> str | None:
    """The one code system a ValueSet draws all its codes from, if it is that simple."""
    includes = (valueset or {}).get("compose", {}).get("include", [])
    systems = {inc.get("system") for inc in includes}
    if len(systems) != 1 or any("valueSet" in inc for inc in includes):
        return None
    return systems.pop()


def code_systems(spec: Path) -> dict[str, str]:
    """{"Owner.element": system} for every `code` element with a required single-system binding. Owners are
    named as in structure.json: type names, backbone elements by their path (`Patient.contact`)."""
    valuesets = {vs["url"]: vs for vs in package_resources(spec / PACKAGE, "ValueSet-")}
    found: dict[str, str] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for sd in load_bundle(spec, name):
            if sd["resourceType"] != "StructureDefinition" or sd.get("derivation") != "specialization":
                continue
            for element in sd["snapshot"]["element"]:
                binding = element.get("binding", {})
                if [t["code"] for t in element.get("type", ())] != ["code"] or binding.get("strength") != "required":
                    continue
                system = _single_system(valuesets.get(binding.get("valueSet", "").split("|")[0]))
                if system is not None:
                    found[element["path"]] = system
    return dict(sorted(found.items()))


def generate(spec: Path) -> None:
    write_data("search_parameters.json", search_parameters(spec))
    write_data("search_parameters_code_systems.json", code_systems(spec))
