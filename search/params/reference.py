"""reference parameters: a local `Type/id` (or a bare id), an absolute URL, a canonical `url|version`, and
`:identifier` (Reference.identifier, like a token). `:[type]` names the target type; chains are search/parse.py's.

A local reference matches local entries of that id (and type, when known); a URL matches entries with that
absolute URL or canonical (and version, when given). An absolute URL under the server's own base is local.
"""

from __future__ import annotations

from typing import Any, Callable

from hearth.search.entries import ReferenceEntry
from hearth.search.fhirpath import reference_type
from hearth.search.ir import ReferencePred
from hearth.search.normalize import split_canonical, split_reference
from hearth.search.params.common import BadValue, Converter, ParseContext, split, unescape

TYPE = "reference"
MODIFIERS = frozenset({"identifier"})  # plus `:[type]`


# --- parsing ----------------------------------------------------------------------------------------------------

def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> ReferencePred:
    if modifier == "identifier":
        parts = [unescape(part) for part in split(text, "|")]
        if len(parts) > 2 or not any(parts):
            raise BadValue("an identifier is value, system|value, |value or system|")
        system, value = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1] or None)
        return ReferencePred(modifier="identifier", identifier_system=system, identifier_value=value)
    value = unescape(text)
    if modifier is not None:  # `:Type`
        found = split_reference(value, context.base_url) if "/" in value else (modifier, value, None)
        if found is None or found[0] != modifier or found[2] is not None or not found[1]:
            raise BadValue(f"expected an id or {modifier}/id")
        return ReferencePred(modifier, found[1])
    if "|" in value:
        url, version = split_canonical(value)
        return ReferencePred(url=url, version=version)
    found = split_reference(value, context.base_url)
    if found is None:
        raise BadValue("not a reference")
    rtype, rid, url = found
    if url is not None:
        return ReferencePred(url=url)
    if rtype is None and len(param.target) == 1:
        rtype = param.target[0]
    return ReferencePred(rtype, rid)


# --- extraction -------------------------------------------------------------------------------------------------

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


def _uri(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str) and value:
        out.append(ReferenceEntry(code, None, None, value))


CONVERTERS: dict[str, Converter] = {"Reference": _reference, "canonical": _canonical, "uri": _uri, "url": _uri}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: ReferencePred) -> Callable[[ReferenceEntry], bool]:
    if p.modifier == "identifier":
        system, value = p.identifier_system, p.identifier_value
        wanted_system = None if system == "" else system
        return lambda e: ((value is None or e.identifier_value == value)
                          and (system is None or e.identifier_system == wanted_system)
                          and e.identifier_value is not None)
    if p.url is not None:
        url, version = p.url, p.version
        return lambda e: e.url == url and (version is None or e.version == version)
    rtype, rid = p.target_type, p.target_id
    if rtype is None:
        return lambda e: e.url is None and e.target_id == rid
    return lambda e: e.url is None and e.target_id == rid and e.target_type == rtype


TESTS = {ReferencePred: _test}
