"""The R4 element model: every type's JSON properties, with their type, cardinality and choice, loaded once.

Read from data/structure.json (generated from the official R4 snapshots by capability/generate_structure.py) the
first time `element_model()` is called; every user reads this one copy and keeps, at most, its own fast structures
derived from it: validation (checks per element), XML (element order and kinds), FHIRPath (typed navigation, for
search extraction and FHIRPath Patch), the transaction's reference walk. Type names are datatype and resource
names, plus one name per backbone element, its path (`Observation.component`); "Resource" stands for any resource
(contained, Bundle.entry.resource).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

DATA = Path(__file__).parent / "data"
MANY, REQUIRED = 1, 2  # the flag bits of structure.json (capability/generate_structure.py)
URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})


class Element(NamedTuple):
    """One JSON property of a type."""

    type: str  # a primitive, a complex type, a backbone path such as "Observation.component", or "Resource"
    many: bool  # max cardinality above 1: a JSON array
    required: bool  # min cardinality 1
    choice: str | None  # the choice element's base name ("value" for valueQuantity), None for other elements


_NONE: Mapping[str, Element] = {}


class ElementModel:
    """The element table, and lookups over it."""

    def __init__(self, types: Mapping[str, Mapping[str, list]], primitives: Mapping[str, str]) -> None:
        self.types: Mapping[str, Mapping[str, Element]] = {
            name: {json_name: Element(type_name, bool(flags & MANY), bool(flags & REQUIRED),
                                      choice[0] if choice else None)
                   for json_name, (type_name, flags, *choice) in properties.items()}
            for name, properties in types.items()}
        self.primitives = primitives  # primitive type -> its R4 regex ("" when R4 gives none)
        self._children: dict[tuple[str, str], list[tuple[str, Element]]] = {}

    def elements(self, type_name: str) -> Mapping[str, Element]:
        """The JSON properties of a complex type, backbone element or resource, in definition order ({} else)."""
        return self.types.get(type_name, _NONE)

    def is_primitive(self, type_name: str) -> bool:
        return type_name in self.primitives

    def is_type(self, name: str) -> bool:
        return name in self.types or name in self.primitives

    def children(self, type_name: str, name: str) -> list[tuple[str, Element]]:
        """(JSON property, element) for the element a path calls `name` in `type_name`: the property itself, or
        one per type of a choice element (`value` -> valueQuantity, valueString, ...)."""
        key = (type_name, name)
        found = self._children.get(key)
        if found is None:
            found = [(prop, element) for prop, element in self.elements(type_name).items()
                     if prop == name or element.choice == name]
            self._children[key] = found
        return found

    @functools.cached_property
    def _code_systems(self) -> Mapping[str, str]:
        return json.loads((DATA / "search_parameters_code_systems.json").read_text(encoding="utf-8"))

    def code_system(self, path: str | None) -> str | None:
        """The code system the required binding of a `code` element implies (`Patient.gender` ->
        http://hl7.org/fhir/administrative-gender), if it draws from one (capability/generate_search.py)."""
        return self._code_systems.get(path) if path is not None else None


@functools.cache
def element_model() -> ElementModel:
    """The R4 element model, read on first use."""
    table = json.loads((DATA / "structure.json").read_text(encoding="utf-8"))
    return ElementModel(table["types"], table["primitives"])
