"""Index extraction: a resource -> the typed entries (search/entries.py) of every search parameter of its type.

`compile_param` turns one SearchParameter into an extractor for one resource type, once: the FHIRPath
expression gives typed branches (search/fhirpath.py) and each branch gets the converter its FHIR type
needs for the parameter's type (HumanName -> every name part, CodeableConcept -> every coding plus its
text, Period -> a range with open ends, ...; each type's converters are in its module, search/params/).
Branches whose type the parameter type cannot index (e.g. SampledData for a quantity) are left out; a
parameter left with none is unsupported. Composites pair the entries of their components per repetition of
their base element, here.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Callable, Protocol

from hearth.capability.elements import ElementModel
from hearth.capability.fhirpath import Branch, FhirPathError, Nodes, run_branch
from hearth.search.entries import CompositeEntry, Entry, TokenEntry
from hearth.search.fhirpath import compile_path
from hearth.search.params import TYPES, date, token
from hearth.search.params.common import Converter

Extractor = Callable[[Nodes, dict, "str | None", list], None]
"""(nodes, root resource, server base URL, output list): appends the entries found under `nodes`."""


class ParamLike(Protocol):
    """What extraction needs of a SearchParam (search/registry.py)."""

    code: str
    type: str
    expression: str | None
    components: tuple[tuple[str, str], ...]


_CONVERTERS: dict[str, dict[str, Converter]] = {name: kind.CONVERTERS for name, kind in TYPES.items()
                                                if name != "composite"}
SUPPORTED_TYPES = frozenset(TYPES)


def _converter(param_type: str, branch: Branch, model: ElementModel) -> Converter | None:
    convert = _CONVERTERS[param_type].get(branch.type)
    if param_type == "token" and branch.type == "code":
        system = model.code_system(branch.path)
        if system is not None:
            return token.bound_code(system)
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
    # its range spans at most a year: storage can bound a range scan on either end (storage/single_dates.py)
    single_date: bool = False


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
                   and branches[0].type in date.INSTANT_TYPES)
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
