"""uri parameters: equality; `:above` the entry is a prefix of the value (so: the entry equals one of the value's
prefixes, listed, each counted as one of the parameter's values); `:below` the value is a prefix of the entry."""

from __future__ import annotations

from typing import Any, Callable

from hearth.search.entries import UriEntry
from hearth.search.ir import UriPred
from hearth.search.limits import too_costly
from hearth.search.params.common import Converter, ParseContext, unescape

TYPE = "uri"
MODIFIERS = frozenset({"above", "below"})


# --- parsing ----------------------------------------------------------------------------------------------------

def pred(value: str, modifier: str | None = None) -> UriPred:
    if modifier == "above":
        return UriPred(tuple(value[:n] for n in range(len(value) + 1)))
    return UriPred((value,), modifier == "below")


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> UriPred:
    value = unescape(text)
    if modifier == "above" and len(value) + 1 > context.limits.max_values:  # its prefixes, the empty one too
        raise too_costly("search_max_values", context.limits.max_values,
                         f"A uri :above value of {len(value)} characters (one value per prefix)")
    return pred(value, modifier)


# --- extraction -------------------------------------------------------------------------------------------------

def _uri(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(UriEntry(code, value))


CONVERTERS: dict[str, Converter] = {t: _uri for t in ("uri", "url", "canonical", "oid", "uuid")}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: UriPred) -> Callable[[UriEntry], bool]:
    values = p.values
    if p.below:
        return lambda e: e.value.startswith(values)
    if len(values) == 1:
        value = values[0]
        return lambda e: e.value == value
    wanted = frozenset(values)
    return lambda e: e.value in wanted


TESTS = {UriPred: _test}
