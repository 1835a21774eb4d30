"""The R4 element model (capability/data/structure.json) as lookups: what type an element has, and how often.

Used where a resource must be walked knowing its types: rewriting references in a transaction, and
evaluating FHIRPath Patch paths.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import NamedTuple

import capability

URI_TYPES = frozenset({"uri", "url", "canonical", "oid", "uuid"})


class Element(NamedTuple):
    type: str  # a primitive, a complex type, a backbone path like "Observation.component", or "Resource"
    many: bool
    choice: str | None  # "value" for valueQuantity


@cache
def _table() -> tuple[dict[str, dict[str, Element]], frozenset[str]]:
    raw = json.loads((Path(capability.__file__).parent / "data" / "structure.json").read_text(encoding="utf-8"))
    types = {name: {json_name: Element(spec[0], bool(spec[1] & 1), spec[2] if len(spec) > 2 else None)
                    for json_name, spec in elements.items()}
             for name, elements in raw["types"].items()}
    return types, frozenset(raw["primitives"])


def elements(type_name: str) -> dict[str, Element]:
    """The JSON properties of a complex type, backbone element or resource ({} for primitives)."""
    return _table()[0].get(type_name, {})


def is_primitive(type_name: str) -> bool:
    return type_name in _table()[1]


def choices(type_name: str, base: str) -> list[tuple[str, Element]]:
    """The JSON names (and elements) of the choice element `base` (e.g. "value") of `type_name`."""
    return [(name, element) for name, element in elements(type_name).items() if element.choice == base]
