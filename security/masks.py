"""Element masks (data minimisation): elements a client is never shown, such as `Patient.name`.

A mask is a list of paths `Type.element[.child…]`; a resource leaving for that client loses them (through lists
too) and is marked as subsetted (meta.tag SUBSETTED, as `_summary` marks it) and redacted (meta.security
REDACTED), so the receiver knows it is not the whole record.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hearth.capability import fhir_json
from hearth.storage.base import Version

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED",
            "display": "redacted"}


def masked(version: Version, mask: tuple[str, ...]) -> Version:
    """`version` without the elements `mask` names for its type (unchanged when it holds none of them)."""
    paths = [path.split(".")[1:] for path in mask if path.split(".", 1)[0] == version.type and "." in path]
    if not paths or version.deleted:
        return version
    resource = fhir_json.loads(version.body, trusted=True)
    removed = False
    for path in paths:
        removed |= strip_path(resource, path)
    if not removed:
        return version
    meta = resource.setdefault("meta", {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    meta["security"] = [*meta.get("security", []), REDACTED]
    return replace(version, body=fhir_json.dumps(resource))


def strip_path(node: Any, path: list[str]) -> bool:
    """Remove the element at `path` (names below the resource) from `node`, through lists; whether any was there."""
    if isinstance(node, list):
        return any([strip_path(item, path) for item in node])
    if not isinstance(node, dict):
        return False
    name, rest = path[0], path[1:]
    if not rest:  # `value` names every choice of a choice element too (valueQuantity, valueString…), as in FHIRPath
        found = [key for key in node if _names(key.removeprefix("_"), name)]
        for key in found:
            del node[key]
        return bool(found)
    return name in node and strip_path(node[name], rest)


def _names(key: str, name: str) -> bool:
    return key == name or (key.startswith(name) and key[len(name):len(name) + 1].isupper())


def check_mask(mask: tuple[str, ...]) -> None:
    """ValueError for a path that is not `Type.element…`."""
    for path in mask:
        parts = path.split(".")
        if len(parts) < 2 or not all(part.isidentifier() for part in parts) or not parts[0][:1].isupper():
            raise ValueError(f"Invalid mask path {path!r}: expected Type.element, such as Patient.name")
