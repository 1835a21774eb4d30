"""Developer step of capability/generate.py: data/bindings.json, the ValueSet of every required binding in R4.

Its shape: {type name: {JSON property: ValueSet url}}, with the type names and JSON properties of structure.json
(datatypes, resources, profiled datatypes such as MoneyQuantity, backbone elements by path; a choice element
under each of its JSON names). The `|4.0.1` version of the canonical is dropped: the shipped terminology is R4's.
Prints how each ValueSet is checked (capability/bindings.py) and which are not, with the elements bound to them.
"""

from __future__ import annotations

from pathlib import Path

from hearth.capability.bindings import checked_by
from hearth.capability.generate_files import write_data
from hearth.capability.generate_structure import has_elements, properties, structure_definitions

BOUND_TYPES = ("code", "Coding", "CodeableConcept")  # the types capability/validation.py checks bindings on


def required_bindings(spec: Path) -> dict[str, dict[str, str]]:
    """{type name: {JSON property: ValueSet url}} for every element whose binding strength is `required`."""
    table: dict[str, dict[str, str]] = {}
    for sd in structure_definitions(spec):
        if sd["kind"] == "primitive-type" or not has_elements(sd):
            continue
        for owner, name, (type_name, *_), element in properties(sd):
            binding = element.get("binding")
            if binding is None or binding["strength"] != "required":
                continue
            if type_name not in BOUND_TYPES:  # none in R4; fail rather than write a binding nobody checks
                raise ValueError(f"{element['path']}: a required binding on a {type_name}")
            table.setdefault(owner, {})[name] = binding["valueSet"].partition("|")[0]
    return table


def report(table: dict[str, dict[str, str]]) -> list[str]:
    """One line per ValueSet not checked against its expansion, naming its elements; and a count."""
    elements: dict[str, list[str]] = {}
    for owner, bound in table.items():
        for name, valueset in bound.items():
            elements.setdefault(valueset, []).append(f"{owner}.{name}")
    lines = [f"required bindings: {sum(map(len, elements.values()))} elements, {len(elements)} ValueSets"]
    for valueset, names in sorted(elements.items()):
        how = checked_by(valueset)
        if how != "expansion":
            lines.append(f"  {'checked by its grammar' if how else 'NOT CHECKED (no expansion)'}: {valueset} "
                         f"({len(names)}: {', '.join(names)})")
    return lines


def generate(spec: Path) -> None:
    table = required_bindings(spec)
    write_data("bindings.json", table)
    print("\n".join(report(table)))
