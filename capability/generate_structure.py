"""Developer script: build capability/data/structure.json, the R4 element table `validation` checks JSON against.

The table is read from the official R4 snapshots (profiles-types.json, profiles-resources.json). Its shape:

    {"primitives": {type: regex or ""},
     "types": {type name: {json property: [element type, flags] or [element type, flags, choice base]}}}

`flags` is a bit set: 1 = an array (max > 1), 2 = required (min >= 1). Type names are datatype and resource names,
plus one name per backbone element, its path (e.g. "Observation.component"). A choice element `value[x]` is listed
once per allowed type (`valueQuantity`, `valueString`, ...), each carrying the choice base "value". Elements with
max = 0 (profile constraints such as SimpleQuantity.comparator) are left out, so they are rejected as unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from hearth.capability.generate_files import load_bundle

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
CORE_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
MANY, REQUIRED = 1, 2


def _type_code(element_type: dict) -> str:
    """The FHIR type of one ElementDefinition.type, resolving FHIRPath system types and core profiles."""
    code = element_type["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        fhir_type = [ext["valueUrl"] for ext in element_type.get("extension", ()) if ext["url"] == FHIR_TYPE_EXT]
        return fhir_type[0] if fhir_type else "string"
    # Only SimpleQuantity is used as a profile on a datatype in core R4 (Quantity's `comparator` is forbidden).
    profiles = [p for p in element_type.get("profile", ()) if p.startswith(CORE_PREFIX)]
    return profiles[0][len(CORE_PREFIX):] if code == "Quantity" and profiles else code


def properties(sd: dict) -> Iterator[tuple[str, str, list, dict]]:
    """(owner type name, JSON property name, [element type, flags(, choice base)], ElementDefinition) for every
    JSON property of one StructureDefinition: of its own type and of its backbone elements."""
    root = sd["type"] if sd.get("derivation", "specialization") == "specialization" else sd["id"]
    snapshot = sd["snapshot"]["element"]
    parents = {el["path"].rsplit(".", 1)[0] for el in snapshot}
    for el in snapshot[1:]:
        path = el["path"]
        if el.get("max") == "0":
            continue
        owner, name = path.rsplit(".", 1)
        owner_name = root if owner == sd["type"] else root + owner[len(sd["type"]):]
        flags = (MANY if el["max"] != "1" else 0) | (REQUIRED if el["min"] >= 1 else 0)
        if "contentReference" in el:
            target = el["contentReference"].lstrip("#")
            types = [(None, root + target[len(sd["type"]):])]
        elif path in parents:
            types = [(None, root + path[len(sd["type"]):])]
        elif sd["kind"] == "resource" and path == sd["type"] + ".id":
            # The R4 snapshot says System.String (string) here; the differential and the prose say `id`.
            types = [(None, "id")]
        else:
            types = [(t["code"], _type_code(t)) for t in el["type"]]
        if name.endswith("[x]"):
            base = name[:-3]
            for code, type_name in types:  # the JSON name uses the type code, never a profile (SimpleQuantity)
                yield owner_name, base + code[0].upper() + code[1:], [type_name, flags, base], el
        else:
            yield owner_name, name, [types[0][1], flags], el


def structure_definitions(spec: Path) -> Iterator[dict]:
    """The R4 StructureDefinitions of primitive and complex types and of resources (no logical models)."""
    for name in ("profiles-types.json", "profiles-resources.json"):
        for sd in load_bundle(spec, name):
            if sd["resourceType"] == "StructureDefinition" and sd["kind"] != "logical":
                yield sd


def has_elements(sd: dict) -> bool:
    """Whether the element table lists this (non-primitive) StructureDefinition's properties."""
    return not sd.get("abstract") or sd["kind"] == "complex-type"  # keep Element: `_x` primitive extensions


def _primitive_regex(sd: dict) -> str:
    value = next(el for el in sd["snapshot"]["element"] if el["path"] == sd["type"] + ".value")
    regexes = [ext["valueString"] for t in value["type"] for ext in t.get("extension", ()) if ext["url"] == REGEX_EXT]
    return regexes[0] if regexes else ""


def structure(spec: Path) -> dict:
    """The R4 element table: primitive regexes and the elements of every complex type, resource and backbone."""
    primitives: dict[str, str] = {}
    types: dict[str, dict[str, list]] = {}
    for sd in structure_definitions(spec):
        if sd["kind"] == "primitive-type":
            primitives[sd["type"]] = _primitive_regex(sd)
        elif has_elements(sd):
            for owner, name, row, _ in properties(sd):
                types.setdefault(owner, {})[name] = row
    return {"primitives": primitives, "types": types}
