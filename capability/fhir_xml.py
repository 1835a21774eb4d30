"""FHIR R4 XML in and out (http://hl7.org/fhir/R4/xml.html), converted to and from the JSON form.

Table-driven over the R4 element model (capability/elements.py, in StructureDefinition order), so element order,
arrays, choice types and primitive types come from the official definitions. Why not fhir.resources' XML:
its models are R4B (element sets differ from R4) and it parses decimals through float; here decimals stay exactly
as written (`Decimal` on the JSON side, see fhir_json) and narrative XHTML is copied as XML.

Writing builds the text directly (faster than a tree). Reading parses untrusted bytes with `expat_parser`: a DTD
is refused wherever it stands and in whatever encoding the document is written, so no entity can be declared (no
billion laughs, nothing fetched); and `parse` refuses nesting deeper than MAX_DEPTH while parsing, before any of the
recursive walks here could meet Python's recursion limit. Element names are expat's `namespace}local`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from decimal import Decimal, InvalidOperation
from typing import Any

from pyexpat import ExpatError, ParserCreate, XMLParserType, errors

from hearth.capability.elements import element_model
from hearth.capability.resource_types import RESOURCE_TYPES

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_FHIR = FHIR_NS + "}"
_XHTML = XHTML_NS + "}"
_XML_NS = "http://www.w3.org/XML/1998/namespace}"  # xml:lang in narrative
# Elements nested in one XML document. Real R4 data nests at most 11 deep (the core package, Synthea, the
# TestScripts). 120 takes every resource validation allows (objects 100 deep, their primitives one element more, a
# narrative inside) and keeps the JSON form of any accepted document (at most two JSON levels per element) under
# orjson's fixed limit of 254 levels.
MAX_DEPTH = 120


class FhirXmlError(ValueError):
    """The XML is not well formed, or not FHIR R4 XML."""


def _refuse_dtd(*_: object) -> None:
    raise FhirXmlError("DOCTYPE declarations (DTDs) are not allowed in FHIR XML")


def expat_parser() -> XMLParserType:
    """An expat parser for untrusted XML, with defusedxml's guarantees: it stops at a DOCTYPE, before any entity
    could be declared (the entity and external-reference handlers are the same guard again, as defusedxml sets them).

    defusedxml itself is not used: its ElementTree parser adds a pure-Python layer per element (a 3 MB Synthea
    bundle parsed 1.3 times slower than `parse` does, and that without a depth bound), and setting one up costs
    about 20 times what this does: more than a typical narrative's whole check.
    """
    parser = ParserCreate(None, "}")
    parser.StartDoctypeDeclHandler = parser.EntityDeclHandler = parser.UnparsedEntityDeclHandler = \
        parser.ExternalEntityRefHandler = _refuse_dtd
    return parser


def expat_error(error: ExpatError) -> str:
    """What expat found wrong, and where."""
    return f"{errors.messages[error.code]} (line {error.lineno}, column {error.offset + 1})"


def parse(data: bytes | str) -> ET.Element:
    """The root element of untrusted XML: no DTD (so no entities of any kind), at most MAX_DEPTH elements deep."""
    parser, tree = expat_parser(), ET.TreeBuilder()
    tree_start, tree_end, depth = tree.start, tree.end, 0

    def start(name: str, attributes: dict[str, str]) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise FhirXmlError(f"XML nested deeper than {MAX_DEPTH} elements")
        tree_start(name, attributes)

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        tree_end(name)

    parser.buffer_text = True
    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, tree.data
    try:
        parser.Parse(data, True)
    except ExpatError as exc:
        raise FhirXmlError(f"Malformed XML: {expat_error(exc)}") from None
    except FhirXmlError:
        raise
    except (ValueError, LookupError) as exc:  # an encoding expat cannot read or nobody knows; a lone surrogate
        raise FhirXmlError(f"Malformed XML: {exc}") from None
    return tree.close()


# Per type, JSON property -> (type, repeats), from the element model: plain tuples unpack faster than its Elements.
_TABLES = {name: {prop: (element.type, element.many) for prop, element in elements.items()}
           for name, elements in element_model().types.items()}
_PRIMITIVES = element_model().primitives
_INTEGERS = {"integer", "positiveInt", "unsignedInt"}
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_ATTR_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;",
                               "\t": "&#9;"})
_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_NOT_XML_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # XML 1.0 Char


def _attr(value: str) -> str:
    return value.translate(_ATTR_ESCAPES)


# ---------------------------------------------------------------- JSON -> XML

def json_to_xml(resource: dict, salvage: bool = False) -> bytes:
    """The R4 XML document of one resource in its JSON form (decimals as `Decimal` or int keep their digits).

    With `salvage`, a narrative that cannot be written as XHTML (stored before narratives were checked) is written
    as its escaped source text instead of failing the whole document.
    """
    out: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>']
    _write_resource(resource, out, salvage, f' xmlns="{FHIR_NS}"')
    return "".join(out).encode("utf-8")


def _write_resource(resource: dict, out: list[str], salvage: bool, xmlns: str = "") -> None:
    resource_type = resource.get("resourceType") if isinstance(resource, dict) else None
    if resource_type not in RESOURCE_TYPES:
        raise FhirXmlError(f"Not a FHIR R4 resource type: {resource_type!r}")
    out.append(f"<{resource_type}{xmlns}>")
    _write_children(resource, resource_type, out, {"resourceType"}, salvage)
    out.append(f"</{resource_type}>")


def _write_children(obj: dict, type_name: str, out: list[str], done: set[str], salvage: bool) -> None:
    table = _TABLES[type_name]
    unknown = [key for key in obj if key not in done and key.removeprefix("_") not in table]
    if unknown:
        raise FhirXmlError(f"Unknown element '{unknown[0]}' in {type_name}")
    for name, (element_type, many) in table.items():
        if name in done:
            continue
        value, extra = obj.get(name), obj.get("_" + name)
        if value is None and extra is None:
            continue
        if element_type in _PRIMITIVES:
            if element_type == "xhtml":
                out.append(_div(value, salvage))
            elif many:
                values, extras = _array(name, value or []), _array("_" + name, extra or [])
                for i in range(max(len(values), len(extras))):
                    _write_primitive(name, values[i] if i < len(values) else None,
                                     extras[i] if i < len(extras) else None, out)
            else:
                _write_primitive(name, value, extra, out)
        elif element_type == "Resource":
            for item in _array(name, value) if many else (value,):
                out.append(f"<{name}>")
                _write_resource(item, out, salvage)
                out.append(f"</{name}>")
        else:
            for item in _array(name, value) if many else (value,):
                _write_complex(name, item, element_type, out, salvage)


def _array(name: str, value: Any) -> list:
    if not isinstance(value, list):
        raise FhirXmlError(f"'{name}' must be a JSON array")
    return value


def _write_complex(name: str, obj: dict, type_name: str, out: list[str], salvage: bool) -> None:
    # Element.id and Extension.url are XML attributes (a resource's id is an element)
    if not isinstance(obj, dict):
        raise FhirXmlError(f"'{name}' must be a JSON object")
    attrs, done = "", set()
    if "id" in obj:
        attrs += f' id="{_attr(obj["id"])}"'
        done.add("id")
    if type_name == "Extension" and "url" in obj:
        attrs += f' url="{_attr(obj["url"])}"'
        done.add("url")
    start = len(out)
    out.append("")
    _write_children(obj, type_name, out, done, salvage)
    if len(out) == start + 1:
        out[start] = f"<{name}{attrs}/>"
    else:
        out[start] = f"<{name}{attrs}>"
        out.append(f"</{name}>")


def _text(name: str, value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise FhirXmlError(f"'{name}' must be a primitive value")
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)  # Decimal keeps its digits; int; str


def _write_primitive(name: str, value: Any, extra: dict | None, out: list[str]) -> None:
    attrs = "" if value is None else f' value="{_attr(_text(name, value))}"'
    if not extra:
        out.append(f"<{name}{attrs}/>")
        return
    if not isinstance(extra, dict):
        raise FhirXmlError(f"'_{name}' must be a JSON object")
    if "id" in extra:
        attrs = f' id="{_attr(extra["id"])}"' + attrs
    out.append(f"<{name}{attrs}>")
    for extension in _array(f"_{name}.extension", extra.get("extension", [])):
        _write_complex("extension", extension, "Extension", out, False)  # no R4 extension value is a Narrative
    out.append(f"</{name}>")


def _div(value: Any, salvage: bool) -> str:
    """Narrative XHTML is written as XML: as given when it declares the XHTML namespace, else with it added.

    It is parsed either way: a narrative that is not well-formed (`&nbsp;`, an unclosed tag) would make the
    whole document unreadable.
    """
    try:
        if not isinstance(value, str):
            raise FhirXmlError("a narrative div is a string")
        element = parse(value)
        if element.tag not in (_XHTML + "div", "div"):
            raise FhirXmlError("the root element is not a <div>")
        if element.tag == _XHTML + "div" and value.startswith(f'<div xmlns="{XHTML_NS}"'):
            return value
        return _xhtml(element, declare=True)
    except FhirXmlError as exc:
        if not salvage:
            raise FhirXmlError(f"Narrative div is not well-formed XHTML: {exc}") from None
        # Every character of the source stays visible, as inert text; only those XML cannot carry are replaced.
        text = _NOT_XML_CHARS.sub("\ufffd", str(value)).translate(_TEXT_ESCAPES)
        return f'<div xmlns="{XHTML_NS}"><pre>{text}</pre></div>'


# ---------------------------------------------------------------- XML -> JSON

def xml_to_json(data: bytes | str) -> dict:
    """The JSON form of one R4 XML resource: numbers as int / `Decimal` (exact), booleans, strings."""
    return _read_resource(parse(data))


def _local(element: ET.Element, namespace: str = _FHIR) -> str:
    tag = element.tag
    if not tag.startswith(namespace):
        raise FhirXmlError(f"Element {_shown(tag)} is not in the FHIR namespace {FHIR_NS}")
    return tag[len(namespace):]


def _read_resource(element: ET.Element) -> dict:
    resource_type = _local(element)
    if resource_type not in RESOURCE_TYPES:
        raise FhirXmlError(f"Not a FHIR R4 resource type: {resource_type}")
    resource: dict[str, Any] = {"resourceType": resource_type}
    _read_children(element, resource_type, resource)
    return resource


def _read_children(element: ET.Element, type_name: str, obj: dict) -> None:
    table = _TABLES[type_name]
    arrays: dict[str, tuple[list, list]] = {}
    for child in element:
        if child.tag == _XHTML + "div" and "div" in table:
            obj["div"] = _xhtml(child, declare=True)
            continue
        name = _local(child)
        spec = table.get(name)
        if spec is None:
            raise FhirXmlError(f"Unknown element '{name}' in {type_name}")
        element_type, many = spec
        if element_type in _PRIMITIVES:
            value, extra = _read_primitive(child, element_type, name)
            if many:
                values, extras = arrays.setdefault(name, ([], []))
                values.append(value)
                extras.append(extra)
                continue
            if value is not None:
                obj[name] = value
            if extra is not None:
                obj["_" + name] = extra
            continue
        if element_type == "Resource":
            inner = list(child)
            if len(inner) != 1:
                raise FhirXmlError(f"'{name}' must hold exactly one resource")
            item: Any = _read_resource(inner[0])
        else:
            item = {}
            if "id" in child.attrib:
                item["id"] = child.attrib["id"]
            if element_type == "Extension" and "url" in child.attrib:
                item["url"] = child.attrib["url"]
            _read_children(child, element_type, item)
        if many:
            obj.setdefault(name, []).append(item)
        else:
            obj[name] = item
    for name, (values, extras) in arrays.items():
        # JSON keeps the two arrays aligned, with nulls where only one side has something
        if any(value is not None for value in values):
            obj[name] = values
        if any(extra is not None for extra in extras):
            obj["_" + name] = extras


def _read_primitive(element: ET.Element, type_name: str, name: str) -> tuple[Any, dict | None]:
    raw = element.get("value")
    value = None if raw is None else _typed(raw, type_name, name)
    extra: dict[str, Any] = {}
    if "id" in element.attrib:
        extra["id"] = element.attrib["id"]
    for child in element:
        if _local(child) != "extension":
            raise FhirXmlError(f"Primitive '{name}' may only hold extensions")
        extension: dict[str, Any] = {"url": child.get("url")} if "url" in child.attrib else {}
        if "id" in child.attrib:
            extension = {"id": child.attrib["id"], **extension}
        _read_children(child, "Extension", extension)
        extra.setdefault("extension", []).append(extension)
    return value, extra or None


def _typed(raw: str, type_name: str, name: str) -> Any:
    if type_name == "boolean":
        if raw not in ("true", "false"):
            raise FhirXmlError(f"'{name}' must be true or false, not '{raw}'")
        return raw == "true"
    if type_name in _INTEGERS:
        try:
            return int(raw)
        except ValueError:
            raise FhirXmlError(f"'{name}' must be an integer, not '{raw}'") from None
    if type_name == "decimal":
        if not _DECIMAL.fullmatch(raw):
            raise FhirXmlError(f"'{name}' must be a decimal, not '{raw}'")
        try:
            return Decimal(raw) if any(c in raw for c in ".eE") else int(raw)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            raise FhirXmlError(f"'{name}' must be a decimal, not '{raw}'") from None
    return raw


def _xhtml(element: ET.Element, declare: bool = False) -> str:
    """XHTML as text: `<br/>`, minimal escaping, the XHTML namespace declared on the outer element.

    Elements in another namespace and attributes in one other than xml: are refused (no narrative may hold them,
    and they would need declarations of their own).
    """
    tag = element.tag
    name = tag[len(_XHTML):] if tag.startswith(_XHTML) else tag
    if "}" in name:
        raise FhirXmlError(f"Narrative element {_shown(name)} is not in the XHTML namespace")
    parts = [f"<{name}"]
    if declare:
        parts.append(f' xmlns="{XHTML_NS}"')
    for key, value in element.attrib.items():
        key = key.replace(_XML_NS, "xml:")
        if "}" in key:
            raise FhirXmlError(f"Narrative attribute {_shown(key)} on <{name}> is not allowed")
        parts.append(f' {key}="{_attr(value)}"')
    children = list(element)
    if element.text is None and not children:
        parts.append("/>")
    else:
        parts.append(">")
        if element.text:
            parts.append(element.text.translate(_TEXT_ESCAPES))
        for child in children:
            parts.append(_xhtml(child))
            if child.tail:
                parts.append(child.tail.translate(_TEXT_ESCAPES))
        parts.append(f"</{name}>")
    return "".join(parts)


def _shown(name: str) -> str:
    """An expat name as people write it: `{namespace}local`."""
    return "{" + name if "}" in name else name
