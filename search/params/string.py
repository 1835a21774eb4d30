"""string parameters: starts-with on the normalised form (case-folded, accents removed, white space collapsed),
`:contains` anywhere in it, `:exact` equal as written. Entries keep both forms (search/entries.py StringEntry)."""

from __future__ import annotations

from typing import Any, Callable

from hearth.search.entries import StringEntry
from hearth.search.ir import StringPred
from hearth.search.normalize import normalize_string
from hearth.search.params.common import STRINGISH, Converter, ParseContext, unescape

TYPE = "string"
MODIFIERS = frozenset({"exact", "contains"})


# --- parsing ----------------------------------------------------------------------------------------------------

def pred(text: str, modifier: str | None = None) -> StringPred:
    """The predicate of one (unescaped) value."""
    if modifier == "exact":
        return StringPred(normalize_string(text), "exact", text)
    return StringPred(normalize_string(text), "contains" if modifier == "contains" else None)


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> StringPred:
    return pred(unescape(text), modifier)


# --- extraction -------------------------------------------------------------------------------------------------

def _string(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(StringEntry(code, normalize_string(value), value))


def _parts(*fields: str) -> Converter:
    """Every string under `fields` (single or repeating) of a complex value, e.g. HumanName parts."""

    def convert(value: Any, code: str, base_url: str | None, out: list) -> None:
        if type(value) is dict:
            for field in fields:
                parts = value.get(field)
                for part in parts if isinstance(parts, list) else () if parts is None else (parts,):
                    _string(part, code, base_url, out)

    return convert


CONVERTERS: dict[str, Converter] = {
    **{t: _string for t in STRINGISH},
    "HumanName": _parts("family", "given", "prefix", "suffix", "text"),
    "Address": _parts("line", "city", "district", "state", "postalCode", "country", "text"),
}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: StringPred) -> Callable[[StringEntry], bool]:
    if p.modifier == "exact":
        exact = p.exact
        return lambda e: e.exact == exact
    norm = p.norm
    if p.modifier == "contains":
        return lambda e: norm in e.norm
    return lambda e: e.norm.startswith(norm)


TESTS = {StringPred: _test}
