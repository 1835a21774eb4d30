"""The SearchParameter registry: the R4 definitions plus SearchParameter resources posted at run time.

Every parameter is compiled, per resource type it applies to, into an index extractor
(search/extract.py) when it is registered. One that cannot be compiled is listed by `unsupported()`
with the reason (logged once at start-up, left out of the CapabilityStatement) instead of being
indexed wrongly. Reads are lock-free: a change builds new per-type tables and swaps them in.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from capability.outcome import FhirError
from capability.resource_types import RESOURCE_TYPES
from search.extract import SUPPORTED_TYPES, CompiledParam, compile_param
from search.fhirpath import NOT_DOMAIN_RESOURCES, ElementModel, FhirPathError

DATA = Path(__file__).parent / "data"
log = logging.getLogger(__name__)

_EMPTY: Mapping[str, "SearchParam"] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SearchParam:
    code: str
    type: str  # number | date | string | token | reference | composite | quantity | uri | special
    base: tuple[str, ...]
    expression: str | None
    url: str
    target: tuple[str, ...] = ()
    components: tuple[tuple[str, str], ...] = ()  # (component SearchParameter url, expression)
    modifiers: tuple[str, ...] = ()  # as declared (R4 core declares none; the parser knows each type's)
    comparators: tuple[str, ...] = ()
    multiple_or: bool | None = None
    multiple_and: bool | None = None
    chain: tuple[str, ...] = ()
    custom: bool = False  # registered at run time from a SearchParameter resource

    @classmethod
    def from_resource(cls, sp: Mapping[str, Any], custom: bool = False) -> "SearchParam":
        """From a SearchParameter resource or a compact record of capability/data/search_parameters.json."""
        components = sp.get("component") or ()
        return cls(
            code=sp["code"], type=sp["type"], base=tuple(sp["base"]), expression=sp.get("expression"),
            url=sp["url"], target=tuple(sp.get("target") or ()),
            components=tuple((c["definition"], c["expression"]) if isinstance(c, Mapping) else tuple(c)
                             for c in components),
            modifiers=tuple(sp.get("modifier") or ()), comparators=tuple(sp.get("comparator") or ()),
            multiple_or=sp.get("multipleOr"), multiple_and=sp.get("multipleAnd"),
            chain=tuple(sp.get("chain") or ()), custom=custom,
        )


@dataclass(frozen=True, slots=True)
class _TypeTable:
    """One resource type's supported parameters, their extractors and what was left out."""

    params: Mapping[str, SearchParam]
    extractors: tuple[CompiledParam, ...]
    unsupported: tuple[tuple[SearchParam, str], ...]
    single_dates: frozenset[str]  # codes of the date parameters with one date value at most (CompiledParam)


def applies_to(param: SearchParam, resource_type: str) -> bool:
    if resource_type in param.base or "Resource" in param.base:
        return True
    return "DomainResource" in param.base and resource_type not in NOT_DOMAIN_RESOURCES


class SearchRegistry:
    """Search parameters by resource type and code, and by url."""

    def __init__(self, definitions: Iterable[Mapping[str, Any]], model: ElementModel) -> None:
        self._model = model
        self._lock = threading.Lock()
        self._by_url: dict[str, SearchParam] = {}
        for definition in definitions:
            param = SearchParam.from_resource(definition)
            self._by_url[param.url] = param
        self._tables: dict[str, _TypeTable] = {t: self._build(t) for t in sorted(RESOURCE_TYPES)}
        self.generation = 0  # bumped by every register / unregister, for caches built on the registry

    # --- reading ---------------------------------------------------------------------------------

    def params(self, resource_type: str) -> Mapping[str, SearchParam]:
        """Supported parameters of `resource_type` by code (read-only)."""
        table = self._tables.get(resource_type)
        return table.params if table is not None else _EMPTY

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        table = self._tables.get(resource_type)
        return table.params.get(code) if table is not None else None

    def by_url(self, url: str) -> SearchParam | None:
        return self._by_url.get(url)

    def unsupported(self, resource_type: str) -> list[tuple[SearchParam, str]]:
        """Parameters defined for `resource_type` that are not indexed, with the reason."""
        table = self._tables.get(resource_type)
        return list(table.unsupported) if table is not None else []

    def single_date(self, resource_type: str, code: str) -> bool:
        """Whether a `resource_type` resource has at most one value for date parameter `code`, a date,
        dateTime or instant (see CompiledParam.single_date)."""
        table = self._tables.get(resource_type)
        return table is not None and code in table.single_dates

    def extractors(self, resource_type: str) -> tuple[CompiledParam, ...]:
        """The compiled index extractors of `resource_type` (see search/extract.py)."""
        table = self._tables.get(resource_type)
        return table.extractors if table is not None else ()

    # --- building --------------------------------------------------------------------------------

    def _build(self, resource_type: str) -> _TypeTable:
        params: dict[str, SearchParam] = {}
        extractors: list[CompiledParam] = []
        unsupported: list[tuple[SearchParam, str]] = []
        for param in self._by_url.values():
            if not applies_to(param, resource_type):
                continue
            if param.code in params:
                unsupported.append((param, f"code {param.code!r} is already defined by {params[param.code].url}"))
                continue
            try:
                extractors.append(self._compile(param, resource_type))
            except FhirPathError as exc:
                unsupported.append((param, str(exc)))
                continue
            params[param.code] = param
        return _TypeTable(MappingProxyType(params), tuple(extractors), tuple(unsupported),
                          frozenset(c.code for c in extractors if c.single_date))

    def _compile(self, param: SearchParam, resource_type: str) -> CompiledParam:
        if param.type not in SUPPORTED_TYPES:
            raise FhirPathError(f"search parameter type {param.type!r} is not supported")
        return compile_param(param, resource_type, self._model, self._by_url.get)

    # --- run-time SearchParameter resources ------------------------------------------------------

    def check(self, resource: Mapping[str, Any]) -> SearchParam:
        """The SearchParameter `resource` would register as; FhirError 400 if it cannot be indexed. Changes nothing."""
        param = _parse_custom(resource)
        with self._lock:
            self._check(param)
        return param

    def register(self, resource: Mapping[str, Any]) -> SearchParam:
        """Add (or replace, by url) a custom SearchParameter; FhirError 400 if it cannot be indexed."""
        param = _parse_custom(resource)
        with self._lock:
            previous = self._check(param)
            types = self._affected(param) | (self._affected(previous) if previous is not None else set())
            self._by_url[param.url] = param
            self._rebuild(types)
        return param

    def _check(self, param: SearchParam) -> SearchParam | None:
        """Raise FhirError if `param` cannot be registered; return the custom one it replaces, if any."""
        previous = self._by_url.get(param.url)
        if previous is not None and not previous.custom:
            raise FhirError(400, "business-rule", f"{param.url} is a built-in search parameter")
        for resource_type in self._affected(param):
            existing = self.get(resource_type, param.code)
            if existing is not None and existing.url != param.url:
                raise FhirError(400, "business-rule", f"{resource_type} already has a search parameter "
                                f"{param.code!r} ({existing.url})", ("SearchParameter.code",))
            try:
                self._compile(param, resource_type)
            except FhirPathError as exc:
                raise FhirError(400, "not-supported", f"cannot index {param.code!r} on {resource_type}: {exc}",
                                ("SearchParameter.expression",)) from None
        return previous

    def unregister(self, url: str) -> bool:
        """Remove a custom parameter; False if `url` is unknown or built in."""
        with self._lock:
            param = self._by_url.get(url)
            if param is None or not param.custom:
                return False
            del self._by_url[url]
            self._rebuild(self._affected(param))
        return True

    def _affected(self, param: SearchParam) -> set[str]:
        return {t for t in self._tables if applies_to(param, t)}

    def _rebuild(self, resource_types: set[str]) -> None:
        tables = dict(self._tables)
        for resource_type in resource_types:
            tables[resource_type] = self._build(resource_type)
        self._tables = tables
        self.generation += 1


def _parse_custom(resource: Mapping[str, Any]) -> SearchParam:
    """Check the parts of a SearchParameter resource the registry needs."""
    if resource.get("resourceType") != "SearchParameter":
        raise FhirError(400, "invalid", "not a SearchParameter resource")
    for field in ("url", "code", "type", "expression"):
        if not isinstance(resource.get(field), str) or not resource[field]:
            raise FhirError(400, "required", f"SearchParameter.{field} is required to index it",
                            (f"SearchParameter.{field}",))
    base = resource.get("base")
    if not isinstance(base, list) or not base:
        raise FhirError(400, "required", "SearchParameter.base is required", ("SearchParameter.base",))
    for name in base:
        if name not in RESOURCE_TYPES and name not in ("Resource", "DomainResource"):
            raise FhirError(400, "value", f"unknown base resource type {name!r}", ("SearchParameter.base",))
    if resource["type"] not in SUPPORTED_TYPES:
        raise FhirError(400, "not-supported", f"search parameter type {resource['type']!r} is not supported",
                        ("SearchParameter.type",))
    try:
        return SearchParam.from_resource(resource, custom=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise FhirError(400, "invalid", f"malformed SearchParameter: {exc}") from None


@functools.cache
def element_model() -> ElementModel:
    """The R4 element table (capability/data/structure.json, see capability/generate_structure.py) and the
    code systems of bound `code` elements (capability/generate_search.py)."""
    data = json.loads((DATA / "structure.json").read_text(encoding="utf-8"))
    code_systems = json.loads((DATA / "search_parameters_code_systems.json").read_text(encoding="utf-8"))
    return ElementModel(data["types"], frozenset(data["primitives"]), code_systems)


@functools.cache
def default_registry() -> SearchRegistry:
    """The R4 registry, built once; logs the parameters it cannot support."""
    definitions = json.loads((DATA / "search_parameters.json").read_text(encoding="utf-8"))
    registry = SearchRegistry(definitions, element_model())
    left_out = {param.url: reason for t in sorted(RESOURCE_TYPES) for param, reason in registry.unsupported(t)}
    if left_out:
        log.info("%d R4 search parameters are not supported: %s", len(left_out),
                 "; ".join(f"{url.rsplit('/', 1)[-1]}: {reason}" for url, reason in sorted(left_out.items())))
    return registry
