"""composite parameters: `code-value-quantity=http://loinc.org|8480-6$gt100`, one value per component (`$`),
all holding on one CompositeEntry (the components of one repetition of the base element, search/extract.py),
position by position. Components are parameters of the other types, without modifiers."""

from __future__ import annotations

from typing import Any, Callable

from hearth.search.entries import CompositeEntry
from hearth.search.ir import CompositePred
from hearth.search.params import date, number, quantity, reference, string, token, uri
from hearth.search.params.common import BadValue, ParseContext, Unsupported, split

TYPE = "composite"
MODIFIERS: frozenset[str] = frozenset()
LEAVES = {module.TYPE: module for module in (string, token, date, number, quantity, reference, uri)}
LEAF_TESTS: dict[type, Callable[[Any], Callable[[Any], bool]]] = {
    pred_type: test for module in LEAVES.values() for pred_type, test in module.TESTS.items()}


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> CompositePred:
    components = [context.registry.by_url(url) for url, _ in param.components]
    if not components or any(c is None or c.type not in LEAVES for c in components):
        raise Unsupported(f"composite {param.code!r} has components this server does not know")
    parts = split(text, "$")
    if len(parts) != len(components):
        raise BadValue(f"{param.code!r} needs {len(components)} $-separated values")
    if not all(parts):
        raise BadValue("empty component value")
    return CompositePred(tuple(LEAVES[c.type].parse(context, c, None, part) for c, part in zip(components, parts)))


def _test(p: CompositePred) -> Callable[[CompositeEntry], bool]:
    tests = tuple(LEAF_TESTS[type(component)](component) for component in p.components)
    size = len(tests)
    return lambda e: (isinstance(e, CompositeEntry) and len(e.components) == size
                      and all(test(c) for test, c in zip(tests, e.components)))


TESTS = {CompositePred: _test}
