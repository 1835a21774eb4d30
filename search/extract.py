"""Index extraction: a resource -> the typed entries (search/entries.py) of every search parameter of its type.

`compile_param` turns one SearchParameter into an extractor for one resource type, once: the FHIRPath
expression gives typed branches (search/fhirpath.py) and each branch gets the converter its FHIR type
needs for the parameter's type (HumanName -> every name part, CodeableConcept -> every coding plus its
text, Period -> a range with open ends, ...). Branches whose type the parameter type cannot index
(e.g. SampledData for a quantity) are left out; a parameter left with none is unsupported.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from decimal import Decimal
from itertools import product
from typing import Any, Callable, Protocol

from capability.elements import ElementModel
from capability.fhirpath import Branch, FhirPathError, Nodes, run_branch
from search.entries import (MAX_INSTANT, MIN_INSTANT, CompositeEntry, DateEntry, Entry, NumberEntry, QuantityEntry,
                            ReferenceEntry, StringEntry, TokenEntry, UriEntry)
from search.fhirpath import compile_path, reference_type
from search.normalize import date_range, normalize_string, number_range, split_canonical, split_reference

Extractor = Callable[[Nodes, dict, "str | None", list], None]
"""(nodes, root resource, server base URL, output list): appends the entries found under `nodes`."""
Converter = Callable[[Any, str, "str | None", list], None]
"""(one value, parameter code, server base URL, output list): appends that value's entries."""

ISO_4217 = "urn:iso:std:iso:4217"
# The open end of a Range without low or high: finite, because JSON (composite rows) cannot carry infinity.
_OPEN_END = sys.float_info.max
_STRINGISH = ("string", "markdown", "code", "id", "uri", "url", "canonical", "uuid", "oid")
_QUANTITIES = ("Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity")


class ParamLike(Protocol):
    """What extraction needs of a SearchParam (search/registry.py)."""

    code: str
    type: str
    expression: str | None
    components: tuple[tuple[str, str], ...]


def _norm(text: Any) -> str | None:
    return normalize_string(text) if isinstance(text, str) and text else None


def _each(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


# --- string --------------------------------------------------------------------------------------

def _string(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(StringEntry(code, normalize_string(value), value))


def _parts(*fields: str) -> Converter:
    """Every string under `fields` (single or repeating) of a complex value, e.g. HumanName parts."""

    def convert(value: Any, code: str, base_url: str | None, out: list) -> None:
        if type(value) is dict:
            for field in fields:
                for part in _each(value.get(field)):
                    _string(part, code, base_url, out)

    return convert


# --- token ---------------------------------------------------------------------------------------

def _coding(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict and (value.get("code") is not None or value.get("system") is not None):
        out.append(TokenEntry(code, value.get("system"), value.get("code"), _norm(value.get("display"))))


def _codeable_concept(value: Any, code: str, base_url: str | None, out: list) -> None:
    """Each coding, plus (for `:text`) an entry carrying only CodeableConcept.text."""
    if type(value) is not dict:
        return
    for coding in _each(value.get("coding")):
        _coding(coding, code, base_url, out)
    text = _norm(value.get("text"))
    if text:
        out.append(TokenEntry(code, None, None, text))


def _identifier(value: Any, code: str, base_url: str | None, out: list) -> None:
    """system|value, repeated once per Identifier.type coding for `:of-type`."""
    if type(value) is not dict or value.get("value") is None and value.get("system") is None:
        return
    system, ident = value.get("system"), value.get("value")
    id_type = value.get("type") if type(value.get("type")) is dict else {}
    text = _norm(id_type.get("text"))
    codings = [c for c in _each(id_type.get("coding")) if type(c) is dict]
    if not codings:
        out.append(TokenEntry(code, system, ident, text))
    for coding in codings:
        out.append(TokenEntry(code, system, ident, text, coding.get("system"), coding.get("code")))


def _contact_point(value: Any, code: str, base_url: str | None, out: list) -> None:
    """code = the value; system = ContactPoint.system (phone, email, ...), so `telecom=phone|555-1234` works."""
    if type(value) is dict and isinstance(value.get("value"), str):
        out.append(TokenEntry(code, value.get("system"), value["value"]))


def _plain_token(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(TokenEntry(code, None, value))


def _boolean(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, bool):
        out.append(TokenEntry(code, None, "true" if value else "false"))


# --- date ----------------------------------------------------------------------------------------

def _date(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str):
        try:
            out.append(DateEntry(code, *date_range(value)))
        except ValueError:
            pass  # not a valid date: validation rejects these on write; never fail indexing over one


def _period(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is not dict:
        return
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return
    try:
        lo = date_range(start)[0] if isinstance(start, str) else MIN_INSTANT
        hi = date_range(end)[1] if isinstance(end, str) else MAX_INSTANT
    except ValueError:
        return
    out.append(DateEntry(code, lo, hi))


def _timing(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict:
        for event in _each(value.get("event")):
            _date(event, code, base_url, out)


# --- number and quantity -------------------------------------------------------------------------

def _range_of(number: Any) -> tuple[float, float, float] | None:
    if isinstance(number, bool) or not isinstance(number, (int, Decimal, float, str)):
        return None
    try:
        return number_range(repr(number) if isinstance(number, float) else number)
    except ValueError:
        return None


def _number(value: Any, code: str, base_url: str | None, out: list) -> None:
    found = _range_of(value)
    if found is not None:
        out.append(NumberEntry(code, *found))


def _quantity(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict and (found := _range_of(value.get("value"))) is not None:
        out.append(QuantityEntry(code, *found, value.get("system"), value.get("code"), value.get("unit")))


def _money(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict and (found := _range_of(value.get("value"))) is not None:
        currency = value.get("currency")
        out.append(QuantityEntry(code, *found, ISO_4217 if currency else None, currency, None))


def _range(value: Any, code: str, base_url: str | None, out: list) -> None:
    """A Range as one quantity entry spanning [low's lower bound, high's upper bound]; an absent end is
    open (±float max)."""
    if type(value) is not dict:
        return
    low, high = value.get("low"), value.get("high")
    low_range = _range_of(low.get("value")) if type(low) is dict else None
    high_range = _range_of(high.get("value")) if type(high) is dict else None
    if low_range is None and high_range is None:
        return
    unit_from = low if low_range is not None else high
    out.append(QuantityEntry(code, (low_range or high_range)[0],
                             low_range[1] if low_range else -_OPEN_END,
                             high_range[2] if high_range else _OPEN_END,
                             unit_from.get("system"), unit_from.get("code"), unit_from.get("unit")))


# --- reference and uri ---------------------------------------------------------------------------

def _reference(value: Any, code: str, base_url: str | None, out: list) -> None:
    """A local reference as (type, id); any other as its URL (with the type if it names one, but no id,
    so it never joins a local resource of the same id); Reference.identifier for `:identifier`."""
    if type(value) is not dict:
        return
    ref = value.get("reference")
    identifier = value.get("identifier") if type(value.get("identifier")) is dict else {}
    id_system, id_value = identifier.get("system"), identifier.get("value")
    parsed = split_reference(ref, base_url) if isinstance(ref, str) else None
    if parsed is not None:
        rtype, rid, url = parsed
        if url is not None:
            out.append(ReferenceEntry(code, rtype or reference_type(value), None, url, None, id_system, id_value))
        else:
            out.append(ReferenceEntry(code, rtype, rid, None, None, id_system, id_value))
    elif id_value is not None and not (isinstance(ref, str) and ref.startswith("#")):
        out.append(ReferenceEntry(code, reference_type(value), None, None, None, id_system, id_value))


def _canonical(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        url, version = split_canonical(value)
        out.append(ReferenceEntry(code, None, None, url, version))


def _uri_reference(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(ReferenceEntry(code, None, None, value))


def _uri(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(UriEntry(code, value))


_CONVERTERS: dict[str, dict[str, Converter]] = {
    "string": {
        **{t: _string for t in _STRINGISH},
        "HumanName": _parts("family", "given", "prefix", "suffix", "text"),
        "Address": _parts("line", "city", "district", "state", "postalCode", "country", "text"),
    },
    "token": {
        **{t: _plain_token for t in _STRINGISH}, "boolean": _boolean,
        "Coding": _coding, "CodeableConcept": _codeable_concept, "Identifier": _identifier,
        "ContactPoint": _contact_point,
    },
    "date": {"date": _date, "dateTime": _date, "instant": _date, "Period": _period, "Timing": _timing},
    "number": {t: _number for t in ("integer", "decimal", "positiveInt", "unsignedInt")},
    "quantity": {**{t: _quantity for t in _QUANTITIES}, "Money": _money, "Range": _range},
    "reference": {"Reference": _reference, "canonical": _canonical, "uri": _uri_reference, "url": _uri_reference},
    "uri": {t: _uri for t in ("uri", "url", "canonical", "oid", "uuid")},
}
SUPPORTED_TYPES = frozenset(_CONVERTERS) | {"composite"}


@functools.lru_cache(maxsize=None)
def _bound_code(system: str) -> Converter:
    """A `code` whose element's required binding implies `system` (`Patient.gender`)."""

    def convert(value: Any, code: str, base_url: str | None, out: list) -> None:
        if isinstance(value, str) and value:
            out.append(TokenEntry(code, system, value))

    return convert


def _converter(param_type: str, branch: Branch, model: ElementModel) -> Converter | None:
    convert = _CONVERTERS[param_type].get(branch.type)
    if param_type == "token" and branch.type == "code":
        system = model.code_system(branch.path)
        if system is not None:
            return _bound_code(system)
    return convert


def _typed_extractor(code: str, param_type: str, branches: list[Branch], model: ElementModel) -> Extractor:
    """Run each branch a `param_type` parameter can index and convert its values."""
    if param_type not in _CONVERTERS:
        raise FhirPathError(f"search parameter type {param_type!r} is not supported")
    pairs = [(run_branch(b), convert) for b in branches if (convert := _converter(param_type, b, model)) is not None]
    if not pairs:
        raise FhirPathError(f"a {param_type} parameter cannot index {'/'.join(sorted({b.type for b in branches}))}")

    def extract_typed(nodes: Nodes, root: dict, base_url: str | None, out: list) -> None:
        for run, convert in pairs:
            for value in run(nodes, root):
                convert(value, code, base_url, out)

    return extract_typed


def _composite_extractor(param: ParamLike, branches: list[Branch], model: ElementModel, resource_type: str,
                         by_url: Callable[[str], ParamLike | None]) -> Extractor:
    """One CompositeEntry per repetition of the base element and per combination of component entries."""
    parts: list[tuple[Callable[[Nodes, dict], Nodes], list[Extractor]]] = []
    for branch in branches:
        components = []
        for url, expression in param.components:
            component = by_url(url)
            if component is None:
                raise FhirPathError(f"component {url} is not a known search parameter")
            if component.type in ("composite", "special"):
                raise FhirPathError(f"component {url} has type {component.type}")
            component_branches = compile_path(expression, model, resource_type, context=branch)
            components.append(_typed_extractor(component.code, component.type, component_branches, model))
        # evaluated last first: value components are the ones usually absent (code-value-date on a
        # Quantity value), so most repetitions stop before converting the code
        parts.append((run_branch(branch), components[::-1]))
    if not param.components:
        raise FhirPathError("a composite parameter without components")
    code = param.code

    def extract_composite(nodes: Nodes, root: dict, base_url: str | None, out: list) -> None:
        for run, components in parts:
            for node in run(nodes, root):
                found = []
                for component in components:
                    entries: list[Entry] = []
                    component([node], root, base_url, entries)
                    # a CodeableConcept.text-only token entry says nothing about the code to pair with
                    coded = [e for e in entries if type(e) is not TokenEntry or e.code is not None]
                    if not coded:
                        break
                    found.append(coded if len(coded) == 1 else list(dict.fromkeys(coded)))
                else:
                    out.extend(CompositeEntry(code, combo) for combo in product(*reversed(found)))

    return extract_composite


@dataclass(frozen=True, slots=True)
class CompiledParam:
    """A parameter's extractor for one resource type."""

    code: str
    extractor: Extractor
    root_key: str | None  # the one top-level property all its paths start with: when absent, no entries
    # a date parameter with at most one value per resource, a date/dateTime/instant (no Period or Timing), so
    # its range spans at most a year: storage can bound a range scan on either end (storage/sqlite/search_dates.py)
    single_date: bool = False


_INSTANT_TYPES = frozenset({"date", "dateTime", "instant"})


def _root_key(branches: list[Branch]) -> str | None:
    firsts = {b.steps[0] if b.steps and isinstance(b.steps[0], str) else None for b in branches}
    return firsts.pop() if len(firsts) == 1 else None


def compile_param(param: ParamLike, resource_type: str, model: ElementModel,
                  by_url: Callable[[str], ParamLike | None]) -> CompiledParam:
    """The extractor of `param` for `resource_type`; FhirPathError (with the reason) if unsupported."""
    if not param.expression:
        raise FhirPathError("no FHIRPath expression")
    branches = compile_path(param.expression, model, resource_type)
    if param.type == "composite":
        extractor = _composite_extractor(param, branches, model, resource_type, by_url)
    else:
        extractor = _typed_extractor(param.code, param.type, branches, model)
    single_date = (param.type == "date" and len(branches) == 1 and not branches[0].many
                   and branches[0].type in _INSTANT_TYPES)
    return CompiledParam(param.code, extractor, _root_key(branches), single_date)


class _HasExtractors(Protocol):
    def extractors(self, resource_type: str) -> tuple[CompiledParam, ...]: ...


def extract(resource: dict, registry: _HasExtractors, base_url: str | None = None) -> list[Entry]:
    """The de-duplicated index entries of `resource` for every supported parameter of its type (search/registry.py).

    `base_url` is the server's own base: absolute references under it index as local `Type/id`.
    """
    out: list[Entry] = []
    nodes = [resource]
    for compiled in registry.extractors(resource["resourceType"]):
        key = compiled.root_key
        if key is not None and key not in resource:  # most parameters of a type are absent: skip the call
            continue
        start = len(out)
        compiled.extractor(nodes, resource, base_url, out)
        # entries of different parameters never collide, so de-duplicate each parameter's own
        # (hashing every entry costs more than all the rest for most resources)
        if len(out) - start > 1:
            out[start:] = dict.fromkeys(out[start:])
    return out
