"""FHIRPath for search extraction: the core (capability/fhirpath.py) with `resolve()` read as search reads it at
index time: `where(resolve() is Patient)` tests the resource type a Reference names, without following it.
"""

from __future__ import annotations

from hearth.capability import fhirpath
from hearth.capability.elements import ElementModel
from hearth.capability.fhirpath import Branch
from hearth.search.normalize import split_reference


def reference_type(reference: dict) -> str | None:
    """The resource type a Reference names: from `reference` (relative or absolute), else from `type`.
    None for contained (`#id`) references and when nothing names one."""
    ref = reference.get("reference")
    parsed = split_reference(ref) if isinstance(ref, str) else None
    if parsed is not None and parsed[0] is not None:
        return parsed[0]
    declared = reference.get("type")
    if isinstance(declared, str) and (parsed is not None or ref is None):
        return declared.rsplit("/", 1)[-1]  # `Patient` or its StructureDefinition URL
    return None


def compile_path(expression: str, model: ElementModel, resource_type: str,
                 context: Branch | None = None) -> list[Branch]:
    """The typed branches `expression` selects on a `resource_type` resource (or, for composite components,
    relative to `context`); FhirPathError when unsupported or selecting nothing."""
    return fhirpath.compile_path(expression, model, resource_type, context, reference_type)
