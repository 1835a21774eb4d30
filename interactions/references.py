"""Finding the references a transaction must rewrite: `urn:uuid:`/`urn:oid:` placeholders and conditional
references (`Patient?identifier=…`), in Reference.reference, in uri/url/canonical/oid/uuid elements and in
narrative links. One walk per resource, typed by the R4 element model (capability/elements.py), collects them;
the transaction rewrites them in place once the targets are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Literal, Union

from hearth.capability.elements import URI_TYPES, element_model

_NARRATIVE_LINK = re.compile(r'((?:href|src)=")(urn:(?:uuid|oid):[^"]+)(")')

Kind = Literal["reference", "uri", "narrative"]
# A location: the resource type, or (parent location, key, list index); built cheaply while walking,
# spelled out only when an error names it.
Path = Union[str, tuple[Any, str, Union[int, None]]]


@dataclass(slots=True)
class Link:
    """A value to rewrite: `holder[key]` is a Reference.reference, a uri-typed value, or a narrative div."""

    holder: dict[str, Any] | list[Any]
    key: str | int
    kind: Kind
    location: Path
    original: str  # the value as the client sent it (a retried transaction rewrites from it again)

    @property
    def path(self) -> str:
        """FHIRPath-like location, for error messages."""
        return _text(self.location)

    def set(self, value: str) -> None:
        self.holder[self.key] = value  # type: ignore[index]


_PLACEHOLDERS = ("urn:uuid:", "urn:oid:")


def is_placeholder(value: str) -> bool:
    return value.startswith(_PLACEHOLDERS)


def is_conditional(value: str) -> bool:
    """`Patient?identifier=…`: a search standing for the one resource it matches."""
    head, sep, _ = value.partition("?")
    return bool(sep) and "/" not in head and head[:1].isupper()


def find_links(resource: dict[str, Any], literal: bool = False) -> list[Link]:
    """Every placeholder or conditional reference in `resource` (and its contained resources); with
    `literal`, every other Reference too (`Patient/123`, absolute URLs: they may name a POSTed entry)."""
    found: list[Link] = []
    _walk(resource, resource.get("resourceType", ""), resource.get("resourceType", ""), found, literal)
    return found


def rewrite_narrative(div: str, target: Callable[[str], str | None]) -> str:
    """`div` with every `href`/`src` placeholder that `target` knows replaced."""
    def replace(match: re.Match[str]) -> str:
        new = target(match.group(2))
        return match.group(0) if new is None else match.group(1) + new + match.group(3)
    return _NARRATIVE_LINK.sub(replace, div)


@cache
def _plan(type_name: str) -> dict[str, tuple[bool, str]]:
    """The properties of `type_name` worth visiting: key -> (holds uri values, type to walk into).

    The resources inside a Bundle that is itself being stored (a document, say) keep their references:
    those are resolved within that Bundle, not within the transaction."""
    model = element_model()
    return {key: (element.type in URI_TYPES, element.type) for key, element in model.elements(type_name).items()
            if (element.type in URI_TYPES or not model.is_primitive(element.type))
            and not (type_name == "Bundle" and key == "entry")}


def _text(path: Path) -> str:
    if isinstance(path, str):
        return path
    parent, key, index = path
    return f"{_text(parent)}.{key}" + ("" if index is None else f"[{index}]")


def _walk(obj: dict[str, Any], type_name: str, path: Path, found: list[Link], literal: bool) -> None:
    if type_name == "Resource":  # contained, Bundle.entry.resource, Parameters.parameter.resource
        type_name = obj.get("resourceType", "")
    if type_name == "Reference":
        value = obj.get("reference")
        if isinstance(value, str) and (is_placeholder(value) or is_conditional(value)
                                       or literal and not value.startswith("#")):
            found.append(Link(obj, "reference", "reference", (path, "reference", None), value))
    elif type_name == "Narrative":
        div = obj.get("div")
        if isinstance(div, str) and "urn:" in div:
            found.append(Link(obj, "div", "narrative", (path, "div", None), div))
        return
    plan = _plan(type_name)
    for key, value in obj.items():
        spec = plan.get(key)
        if spec is None:
            continue
        is_uri, child_type = spec
        if is_uri:
            items = value if isinstance(value, list) else (value,)
            for index, item in enumerate(items):
                if isinstance(item, str) and item.startswith(_PLACEHOLDERS):
                    holder, at = (value, index) if isinstance(value, list) else (obj, key)
                    found.append(Link(holder, at, "uri", (path, key, None), item))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    _walk(item, child_type, (path, key, index), found, literal)
        elif isinstance(value, dict):
            _walk(value, child_type, (path, key, None), found, literal)
