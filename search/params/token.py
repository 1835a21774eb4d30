"""token parameters: codes, Codings, CodeableConcepts, Identifiers, ContactPoints, booleans.

Every token value resolves to the keys an entry must have (search/ir.py TokenPred): `code` any system,
`|code` no system, `system|code`, `system|` any code of the system; `:in` / `:not-in` the codes of a ValueSet's
expansion, `:above` / `:below` the code and its ancestors / descendants, all looked up when the query is parsed.
`:not` and `:not-in` negate (no entry may match); `:text` is a starts-with on an entry's normalised display or
CodeableConcept.text; `:of-type` needs the Identifier's type coding and value.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from hearth.search.entries import TokenEntry
from hearth.search.ir import OfTypePred, TokenKey, TokenPred, TokenTextPred
from hearth.search.normalize import normalize_string
from hearth.search.params.common import STRINGISH, BadValue, Converter, ParseContext, Unsupported, split, unescape

TYPE = "token"
MODIFIERS = frozenset({"text", "not", "above", "below", "in", "not-in", "of-type"})
TERMINOLOGY_MODIFIERS = frozenset({"in", "not-in", "above", "below"})
NEGATED = frozenset({"not", "not-in"})  # one clause per value: `code:not=a,b` is neither a nor b


# --- parsing ----------------------------------------------------------------------------------------------------

def code(system: str | None, value: str | None, negated: bool = False) -> TokenPred:
    """`system|value` (system None: any, "": none; value None: any code of the system)."""
    return TokenPred(((system, value),), negated)


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> TokenPred | TokenTextPred | OfTypePred:
    if modifier == "text":
        return TokenTextPred(normalize_string(unescape(text)))
    if modifier in ("in", "not-in"):
        url = unescape(text)
        codes = _terminology(context, modifier).expand(url)
        if codes is None:
            raise BadValue(f"unknown or non-expandable ValueSet {url!r}")
        return TokenPred(tuple(sorted(codes, key=lambda c: (c[0] or "", c[1]))), modifier == "not-in")
    parts = [unescape(part) for part in split(text, "|")]
    if modifier == "of-type":
        if len(parts) != 3 or not all(parts):
            raise BadValue("of-type needs system|code|value")
        return OfTypePred(*parts)
    if len(parts) == 1:
        system, value = None, parts[0]
    elif len(parts) == 2 and (parts[0] or parts[1]):
        system, value = parts[0], parts[1] or None
    else:
        raise BadValue("a token is code, system|code, |code or system|")
    if modifier in ("above", "below"):
        if not system or value is None:
            raise BadValue(f":{modifier} needs system|code")
        terminology = _terminology(context, modifier)
        closure = terminology.descendants if modifier == "below" else terminology.ancestors
        return TokenPred(tuple((system, c) for c in sorted(set(closure(system, value)) | {value})))
    return code(system, value, modifier == "not")


def _terminology(context: ParseContext, modifier: str) -> Any:
    if context.terminology is None:
        raise Unsupported(f":{modifier} needs a terminology service, and none is configured")
    return context.terminology


# --- extraction -------------------------------------------------------------------------------------------------

def _each(value: Any) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _norm(text: Any) -> str | None:
    return normalize_string(text) if isinstance(text, str) and text else None


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


def _plain(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(TokenEntry(code, None, value))


def _boolean(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, bool):
        out.append(TokenEntry(code, None, "true" if value else "false"))


CONVERTERS: dict[str, Converter] = {
    **{t: _plain for t in STRINGISH}, "boolean": _boolean,
    "Coding": _coding, "CodeableConcept": _codeable_concept, "Identifier": _identifier,
    "ContactPoint": _contact_point,
}


@functools.lru_cache(maxsize=None)
def bound_code(system: str) -> Converter:
    """A `code` whose element's required binding implies `system` (`Patient.gender`)."""

    def convert(value: Any, code: str, base_url: str | None, out: list) -> None:
        if isinstance(value, str) and value:
            out.append(TokenEntry(code, system, value))

    return convert


# --- matching ---------------------------------------------------------------------------------------------------

def entry_keys(entry: TokenEntry) -> tuple[TokenKey, ...]:
    """The keys an entry has: (system, code), (any, code), (system, any); its system "" when it has none."""
    system = "" if entry.system is None else entry.system
    if entry.code is None:
        return ((system, None),)
    return (system, entry.code), (None, entry.code), (system, None)


def _keys_test(p: TokenPred) -> Callable[[TokenEntry], bool]:
    """The positive form: some key of the entry is one of the pred's (a negated pred holds when no entry does)."""
    keys = frozenset(p.keys)
    return lambda e: not keys.isdisjoint(entry_keys(e))


def _text_test(p: TokenTextPred) -> Callable[[TokenEntry], bool]:
    text = p.text
    return lambda e: e.text is not None and e.text.startswith(text)


def _of_type_test(p: OfTypePred) -> Callable[[TokenEntry], bool]:
    wanted = (p.type_system, p.type_code, p.value)
    return lambda e: (e.type_system, e.type_code, e.code) == wanted


TESTS = {TokenPred: _keys_test, TokenTextPred: _text_test, OfTypePred: _of_type_test}
