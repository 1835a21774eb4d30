"""Evaluating an assert's or a variable's `path` (the XPath subset TestScripts use) and `expression` (FHIRPath)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models as fhirpath_models

from hearth.capability import fhir_json
from hearth.capability.resource_types import RESOURCE_TYPES

R4_MODEL = fhirpath_models["r4"]  # type information: choice types (Observation.value), resource types
_STEP = re.compile(r"(?:\w+:)?(@?[A-Za-z_][\w\-]*)(?:\[(\d+)\])?")


class PathError(ValueError):
    """A path or expression the runner cannot evaluate."""


def evaluate_path(resource: Any, path: str) -> list[Any]:
    """`fhir:Patient/fhir:name/fhir:family/@value` or `Patient/id`, walked over the JSON form.

    FHIR XML element names are the JSON property names, so the XPath steps map one to one: a step naming a
    resource type matches the resource inside `resource`/`contained`; `@value` (or a last step on a primitive)
    gives the primitive; `[n]` (1-based) picks one item. Other XPath syntax is reported as unsupported.
    """
    steps = [step for step in path.strip().lstrip("/").split("/") if step]
    nodes: list[Any] = [resource]
    for position, step in enumerate(steps):
        match = _STEP.fullmatch(step)
        if match is None:
            raise PathError(f"unsupported XPath step '{step}' in '{path}'")
        name, index = match.group(1), match.group(2)
        if name.startswith("@"):
            nodes = [_attribute(node, name[1:]) for node in nodes]
            nodes = [node for node in nodes if node is not None]
        elif name in RESOURCE_TYPES and (position == 0 or any(_is(node, name) for node in nodes)):
            nodes = [node for node in nodes if _is(node, name)]
        else:
            nodes = [item for node in nodes if isinstance(node, dict) for item in _as_list(node.get(name))]
        if index is not None:
            nodes = nodes[int(index) - 1:int(index)]
    return nodes


def _is(node: Any, resource_type: str) -> bool:
    return isinstance(node, dict) and node.get("resourceType") == resource_type


def _attribute(node: Any, name: str) -> Any:
    if name == "value":
        return None if isinstance(node, (dict, list)) else node
    return node.get(name) if isinstance(node, dict) else None  # @url of an extension, @id of an element


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    try:
        return compile_fhirpath(expression, R4_MODEL)
    except Exception as exc:  # fhirpathpy raises assorted parser errors
        raise PathError(f"cannot parse FHIRPath '{expression}': {exc}") from None


def evaluate_expression(resource: Any, expression: str) -> list[Any]:
    """A FHIRPath expression (fhirpathpy) over the JSON form of `resource`."""
    function = _compiled(expression)
    try:
        return list(function(resource))
    except Exception as exc:
        raise PathError(f"cannot evaluate FHIRPath '{expression}': {exc}") from None


def as_text(value: Any) -> str:
    """One value as the text an assert's `value` is compared with."""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return fhir_json.dumps(value).decode()
    return str(value)  # int, Decimal (as written), str; fhirpathpy's date/time nodes print as their literals
