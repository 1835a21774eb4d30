"""Structural validation of a resource against FHIR R4 (4.0.1): `validate_resource`.

Design: the R4 answer wins by construction. Every check runs against the R4 element model (capability/elements.py,
generated from the official R4 snapshots), compiled here once into linked checks, not against the fhir.resources R4B
models. Reasons:
- R4 and R4B differ: 18 R4 resource types have no R4B model (MedicinalProduct*, EffectEvidenceSynthesis,
  RiskEvidenceSynthesis, Substance{NucleicAcid,Polymer,Protein,ReferenceInformation,SourceMaterial,Specification}),
  and elements differ (e.g. R4B-only `ActivityDefinition.subjectCanonical`, Evidence and EvidenceVariable were
  redesigned). Validating with R4B where types are "identical" would still need this table to decide identity
  and to cover the rest, and would then check everything twice.
- JSON types: the R4B models validate in pydantic's lax mode and accept `"active": "yes"`, `"value": "72.5"`,
  `"valueInteger": true`, `"valueBoolean": 1`; FHIR JSON does not.
- Cost, per validate on 2 cores, Synthea resources (min of runs on a busy machine): Observation ~20 us,
  Encounter ~32 us, Claim ~30 us, DiagnosticReport ~40 us, Patient ~100-190 us, ExplanationOfBenefit ~200 us;
  R4B `model_validate` alone takes ~160 us, ~250 us, ~300 us, ~200 us, ~1.6 ms and ~2 ms for the same resources.
- The primitive rules are the R4 regexes themselves (read with XML Schema semantics, as the spec writes them),
  plus the range and calendar checks the regexes cannot express.
fhir.resources R4B stays the project's model library; the tests use it as an independent oracle on what R4 and
R4B define alike, and to pin down where they differ.

Checked: unknown elements anywhere (also `_x` for non-primitives), JSON types per element type and cardinality,
empty arrays and objects, primitive formats, one variant per choice element, min = 1 elements, primitive
extensions (`_x` objects, `_x` arrays aligned with `x` arrays, nulls only where the other array has an entry),
contained and nested resources (Bundle.entry.resource, Parameters.parameter.resource), and the invariants
ext-1 (an extension has a value or extensions, not both), dom-2 and dom-4 (contained resources hold no contained
resources and no meta.versionId / meta.lastUpdated), the narrative rules txt-1 and txt-2 (capability/narrative.py),
required bindings (capability/bindings.py). Not checked: other
FHIRPath invariants, other binding strengths, reference targets, profiles.
"""

from __future__ import annotations

import binascii
import calendar
import decimal
import math
import re
import sys
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from hearth.capability.bindings import bound_code, bound_concept, required_bindings
from hearth.capability.elements import Element, ElementModel, element_model
from hearth.capability.narrative import check_narrative
from hearth.capability.outcome import FhirError, Issue
from hearth.capability.resource_types import RESOURCE_TYPES

MAX_ISSUES = 50  # an OperationOutcome naming every fault of a huge garbage body helps nobody
# Objects nest at most this deep (the resource is level 1). The walk recurses per object, and orjson writes no JSON
# deeper than 255 levels: objects alternate with at most one array, so 100 objects stay below 202 levels.
MAX_DEPTH = 100
_DEEP_PATH = 2 * MAX_DEPTH  # each level adds at least 2 characters (".x") to the walk's path

_VALID_KEPT = 4096  # valid values each primitive check remembers (then it starts again)
_VALID_LENGTH = 200  # longer ones (narratives, markdown) rarely repeat and would only take room
Problem = tuple[str, str]  # (IssueType code, what is wrong)
PrimitiveCheck = Callable[[Any], "Problem | None"]


class _Element:
    """One JSON property of a type: what it holds and how often."""

    __slots__ = ("name", "type_name", "many", "choice", "check", "complex", "binding")

    def __init__(self, name: str, element: Element) -> None:
        self.name = name
        self.type_name = element.type
        self.many = element.many
        self.choice = element.choice
        self.check: PrimitiveCheck | None = None  # set for primitive types
        self.complex: _Type | None = None  # set for complex and backbone types (None for Resource)
        self.binding: PrimitiveCheck | None = None  # a Coding or CodeableConcept's required binding


class _Type:
    """A complex type, resource or backbone element: its properties and its required ones."""

    __slots__ = ("name", "elements", "required", "is_resource", "is_extension")

    def __init__(self, name: str) -> None:
        self.name = name
        self.elements: dict[str, _Element] = {}
        self.required: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (label, json names that satisfy it)
        self.is_resource = False
        self.is_extension = name == "Extension"  # ext-1 is checked on it


# --- primitives ---------------------------------------------------------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_DECIMAL_MAGNITUDE = (decimal.DefaultContext.Emin, decimal.DefaultContext.Emax)


def _xsd_regex(pattern: str) -> re.Pattern[str]:
    """Compile an R4 regex the way XML Schema reads it: whitespace is only space, tab, CR and LF."""
    translated = (pattern.replace(r"[ \r\n\t\S]", "(?s:.)").replace(r"[^\s]", r"[^ \t\n\r]")
                  .replace(r"\s", r"[ \t\n\r]").replace(r"\S", r"[^ \t\n\r]"))
    return re.compile(translated)


def _string_check(type_name: str, pattern: str) -> PrimitiveCheck:
    regex = _xsd_regex(pattern) if pattern else None
    # string and markdown: `[ \r\n\t\S]+` accepts any non-empty string, which the emptiness test below covers
    fullmatch = regex.fullmatch if regex is not None and regex.pattern != "(?s:.)+" else None
    calendar_check = type_name in ("date", "dateTime", "instant")
    # values found valid lately: codes, systems and urls repeat across resources, and a set lookup costs a tenth
    # of the regex
    valid: set[str] = set()

    def check(value: Any) -> Problem | None:
        if type(value) is not str:
            return _wrong_json(value, f"a JSON string ({type_name})")
        if value in valid:
            return None
        if not value:
            return "value", f"empty string is not a valid {type_name}"
        if fullmatch is not None and fullmatch(value) is None:
            return "value", f"{value[:80]!r} is not a valid {type_name}"
        if calendar_check and len(value) >= 10 and int(value[8:10]) > 28 \
                and int(value[8:10]) > calendar.monthrange(int(value[:4]), int(value[5:7]))[1]:
            return "value", f"{value[:10]!r} is not a calendar date"
        if len(valid) >= _VALID_KEPT:
            valid.clear()
        if len(value) <= _VALID_LENGTH:
            valid.add(value)
        return None

    return check


def _int_check(type_name: str, low: int) -> PrimitiveCheck:
    def check(value: Any) -> Problem | None:
        if type(value) is not int:
            if type(value) is Decimal:  # also an integer literal past 18 digits (fhir_json parses those so)
                if low <= value <= _INT32[1]:
                    return "value", f"{value} is not a whole number ({type_name})"
                return "value", f"{_number(value)} is out of range for {type_name}"
            return _wrong_json(value, f"a JSON integer ({type_name})")
        if not low <= value <= _INT32[1]:
            return "value", f"{value} is out of range for {type_name}"
        return None

    return check


def _check_decimal(value: Any) -> Problem | None:
    if type(value) is Decimal:
        # Any number of digits is kept, but a magnitude past the decimal module's own exponent range (1e999999)
        # could not be indexed or compared.
        if not _DECIMAL_MAGNITUDE[0] <= value.adjusted() <= _DECIMAL_MAGNITUDE[1]:
            return "value", f"{_number(value)} is out of range for decimal (exponents up to ±999999)"
        return None
    if type(value) is int or type(value) is float and math.isfinite(value):
        return None  # float only reaches here from callers that parsed without fhir_json
    return _wrong_json(value, "a JSON number (decimal)")


def _number(value: Decimal) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _check_boolean(value: Any) -> Problem | None:
    return None if type(value) is bool else _wrong_json(value, "true or false")


def _check_base64(value: Any) -> Problem | None:
    # The R4 regex `(\s*([0-9a-zA-Z\+/=]){4}\s*)+` lets `=` stand anywhere and is slow on megabyte attachments;
    # this is the RFC 4648 form it describes (XML whitespace allowed), checked by the C decoder.
    if type(value) is not str:
        return _wrong_json(value, "a JSON string (base64Binary)")
    if not value:
        return "value", "empty string is not a valid base64Binary"
    try:
        binascii.a2b_base64(value.replace("\n", "").replace("\r", "").replace(" ", "").replace("\t", ""),
                            strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII characters
        return "value", "not valid base64Binary"
    return None


def _check_xhtml(value: Any) -> Problem | None:
    # Narrative.div (R4's only xhtml element): well-formed XHTML, txt-1 and txt-2, see capability/narrative.py
    if type(value) is not str:
        return _wrong_json(value, "a JSON string (xhtml)")
    return check_narrative(value)


def _primitive_checks(regexes: Mapping[str, str]) -> dict[str, PrimitiveCheck]:
    checks = {name: _string_check(name, pattern) for name, pattern in regexes.items()}
    checks.update(boolean=_check_boolean, decimal=_check_decimal, base64Binary=_check_base64, xhtml=_check_xhtml,
                  integer=_int_check("integer", _INT32[0]), positiveInt=_int_check("positiveInt", 1),
                  unsignedInt=_int_check("unsignedInt", 0))
    return checks


def _wrong_json(value: Any, expected: str) -> Problem:
    return "structure", f"expected {expected}, got {_json_kind(value)}"


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


# --- compiled table ---------------------------------------------------------------------------------------


def _compile(model: ElementModel) -> dict[str, _Type]:
    """Turn the element model into linked `_Type`s, once, at import."""
    checks = _primitive_checks(model.primitives)
    types = {name: _Type(name) for name in model.types}
    for name, elements in model.types.items():
        compiled = types[name]
        required: dict[str, list[str]] = {}
        for json_name, definition in elements.items():
            element = _Element(json_name, definition)
            element.check = checks.get(definition.type)
            element.complex = types.get(definition.type)
            compiled.elements[json_name] = element
            if definition.required:
                label = element.choice + "[x]" if element.choice else json_name
                required.setdefault(label, []).append(json_name)
                if element.check is not None:  # a primitive is present when only its `_x` extension is
                    required[label].append("_" + json_name)
        compiled.required = tuple((label, tuple(names)) for label, names in required.items())
        compiled.is_resource = name in RESOURCE_TYPES
    return types


def _bind(types: dict[str, _Type], bindings: dict[str, dict[str, str]]) -> None:
    """Attach the required bindings: a code's own check also tests membership; a Coding or CodeableConcept gets
    a binding check, run after its structure."""
    for type_name, bound in bindings.items():
        for json_name, valueset in bound.items():
            element = types[type_name].elements[json_name]
            if element.check is not None:
                element.check = bound_code(valueset, element.check)
            else:
                element.binding = bound_concept(valueset, element.type_name)


def _load() -> dict[str, _Type]:
    types = _compile(element_model())
    _bind(types, required_bindings())
    return types


_TYPES = _load()
_ELEMENT = _TYPES["Element"]

# --- the walk ---------------------------------------------------------------------------------------------


class TooManyElements(Exception):
    """The resource holds more JSON values than `validate_resource` was allowed to walk."""


class _Issues(list):
    """The issues found so far; stops the walk once there are enough. Also counts down the JSON values the walk may
    still see (the walk raises TooManyElements past them)."""

    __slots__ = ("values_left",)

    def __init__(self, max_elements: int) -> None:
        super().__init__()
        self.values_left = max_elements - 1  # the resource itself is one

    def add(self, code: str, path: str, message: str) -> None:
        self.append(Issue("error", code, f"{path}: {message}", (path,)))
        if len(self) >= MAX_ISSUES:
            raise _Enough


class _Enough(Exception):
    pass


def _walk_object(obj: dict, type_: _Type, path: str, issues: _Issues) -> None:
    """Check one JSON object against `type_`; `path` is its FHIRPath-like expression."""
    # The path holds one "." per level: only a long one can be too deep (and its dots are counted only then).
    if len(path) > _DEEP_PATH and path.count(".") >= MAX_DEPTH:
        issues.add("too-costly", path, f"objects nest more than {MAX_DEPTH} deep")
        return
    issues.values_left -= len(obj)
    if issues.values_left < 0:
        raise TooManyElements
    elements = type_.elements
    seen_choice: dict[str, str] | None = None
    for key, value in obj.items():
        element = elements.get(key)
        extension = element is None and key[:1] == "_"
        if extension:
            element = elements.get(key[1:])
            if element is not None and element.check is None:
                element = None  # only primitives have `_x`
        if element is None:
            if key != "resourceType" or not type_.is_resource:
                issues.add("structure", f"{path}.{key}", "unknown element")
            continue
        if element.choice is not None:
            if seen_choice is None:
                seen_choice = {}
            other = seen_choice.setdefault(element.choice, element.name)
            if other != element.name:
                issues.add("structure", f"{path}.{element.name}",
                           f"only one of {other} and {element.name} may be present")
        if extension:
            _walk_primitive_extension(obj, element, value, path, issues)
        elif element.many:
            if type(value) is not list or not value:
                issues.add("structure", f"{path}.{key}",
                           "expected a non-empty array" if type(value) is list else f"expected an array, got "
                           f"{_json_kind(value)}")
                continue
            issues.values_left -= len(value)
            if issues.values_left < 0:
                raise TooManyElements
            if element.check is not None:
                _walk_primitive_array(obj, element, value, path, issues)
            else:
                for index, item in enumerate(value):
                    _walk_complex(item, element, f"{path}.{key}[{index}]", issues)
        elif element.check is not None:
            problem = element.check(value)
            if problem is not None:
                issues.add(problem[0], f"{path}.{key}", problem[1])
        else:
            _walk_complex(value, element, f"{path}.{key}", issues)
    for label, names in type_.required:
        for name in names:
            if name in obj:
                break
        else:
            issues.add("required", f"{path}.{label}", "required element is missing")
    if type_.is_extension:
        _check_extension(obj, path, issues)


def _walk_complex(value: Any, element: _Element, path: str, issues: _Issues) -> None:
    if type(value) is not dict:
        issues.add("structure", path, f"expected an object ({element.type_name}), got {_json_kind(value)}")
    elif not value:
        issues.add("structure", path, "empty object")
    elif element.complex is not None:
        _walk_object(value, element.complex, path, issues)
        if element.binding is not None:
            problem = element.binding(value)
            if problem is not None:
                issues.add(problem[0], path, problem[1])
    else:  # a Resource: contained, Bundle.entry.resource, Parameters.parameter.resource
        _walk_resource(value, path, issues, contained=element.name == "contained")


def _walk_resource(resource: dict, path: str, issues: _Issues, contained: bool = False) -> None:
    resource_type = resource.get("resourceType")
    if type(resource_type) is not str or resource_type not in RESOURCE_TYPES:
        issues.add("structure", f"{path}.resourceType", f"unknown resource type {resource_type!r}")
        return
    type_ = _TYPES[resource_type]
    if contained:
        if "contained" in resource:
            issues.add("invalid", f"{path}.contained", "a contained resource cannot contain resources (dom-2)")
        meta = resource.get("meta")
        if type(meta) is dict and ("versionId" in meta or "lastUpdated" in meta):
            issues.add("invalid", f"{path}.meta", "a contained resource has no versionId or lastUpdated (dom-4)")
    _walk_object(resource, type_, path, issues)


def _walk_primitive_array(obj: dict, element: _Element, values: list, path: str, issues: _Issues) -> None:
    key = element.name
    extensions = obj.get("_" + key)
    aligned = extensions if type(extensions) is list and len(extensions) == len(values) else None
    check = element.check
    for index, item in enumerate(values):
        if item is None:
            if aligned is None or aligned[index] is None:
                issues.add("structure", f"{path}.{key}[{index}]", "null without an extension in _" + key)
            continue
        problem = check(item)  # type: ignore[misc]
        if problem is not None:
            issues.add(problem[0], f"{path}.{key}[{index}]", problem[1])


def _walk_primitive_extension(obj: dict, element: _Element, value: Any, path: str, issues: _Issues) -> None:
    """`_x`: an Element (id, extension) for a single primitive; an array of Element-or-null aligned with `x`."""
    where = f"{path}.{element.name}"
    if not element.many:
        if type(value) is not dict or not value:
            issues.add("structure", where, f"_{element.name} must be an object with id or extension")
        else:
            _walk_object(value, _ELEMENT, where, issues)
        return
    values = obj.get(element.name)
    if type(value) is not list or not value:
        issues.add("structure", where, f"_{element.name} must be a non-empty array")
        return
    issues.values_left -= len(value)
    if issues.values_left < 0:
        raise TooManyElements
    if type(values) is list and len(values) != len(value):
        issues.add("structure", where, f"_{element.name} must have as many entries as {element.name}")
        return
    for index, item in enumerate(value):
        if item is None:
            if type(values) is not list:
                issues.add("structure", f"{where}[{index}]", "null without a value")
        elif type(item) is not dict or not item:
            issues.add("structure", f"{where}[{index}]", f"_{element.name} entries must be objects or null")
        else:
            _walk_object(item, _ELEMENT, f"{where}[{index}]", issues)


def _check_extension(obj: dict, path: str, issues: _Issues) -> None:
    has_value = any(key.startswith(("value", "_value")) for key in obj)
    if has_value == ("extension" in obj):
        issues.add("invalid", path, "an extension has either a value[x] or extensions, not both nor neither (ext-1)")


# --- entry point ------------------------------------------------------------------------------------------


def validate_resource(resource: dict, max_elements: int = sys.maxsize) -> None:
    """Raise FhirError(400) naming every offending element, or return None when `resource` is valid R4.

    TooManyElements when it holds more than `max_elements` JSON values (each object, array and primitive)."""
    issues = _Issues(max_elements)
    try:
        if type(resource) is not dict:
            issues.add("structure", "Resource", f"a resource is a JSON object, got {_json_kind(resource)}")
        else:
            name = resource.get("resourceType")
            _walk_resource(resource, name if type(name) is str and name in RESOURCE_TYPES else "Resource", issues)
    except _Enough:
        pass
    if issues:
        raise FhirError(400, issues[0].code, issues[0].diagnostics, issues=list(issues))
