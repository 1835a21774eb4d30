"""R4's narrative rules (http://hl7.org/fhir/R4/narrative.html), checked on every Narrative.div before it is stored.

- Well-formed XHTML whose root is a `<div>` in the XHTML namespace: json.html, "The xhtml root element needs to be
  a <div> in the xhtml namespace", so the JSON string declares `xmlns="http://www.w3.org/1999/xhtml"` as XML does.
  At most MAX_DEPTH elements deep. Read with `fhir_xml.expat_parser`, which refuses any DTD (and the
  div must begin with its root element, so it has no prolog to hold one): no entity is declared, expanded or fetched.
  One streaming pass, no tree: each element is checked as expat reads it.
- txt-1: only the basic HTML formatting elements and attributes. The sets below are those of txt-1's XPath in the R4
  Narrative StructureDefinition, plus what the R4 schema (fhir-xhtml.xsd) also allows: `address`, `bdo` and `kbd`
  (HTML 4 chapters 7-9, which txt-1's own text names), `map` and `area` with their attributes, and `xml:lang` and
  `xml:space`. Anything else, `script`, `style`, forms, objects, iframes and every `on*` event attribute
  included, is refused, as is an element in another namespace.
- No active content: the XHTML "SHALL NOT contain ... scripts, forms, ... This is to ensure ... that there is no
  active content". A `javascript:` or `vbscript:` URL is a script by another name, so URL attributes may not use
  those schemes; nor may any of them but an image's `src` hold a `data:` URL (a link to `data:text/html,...` is a
  page of the author's making).
- txt-2: some non-whitespace text, or an image.
"""

from __future__ import annotations

import re
from pyexpat import ExpatError

from hearth.capability.fhir_xml import XHTML_NS, expat_error, expat_parser

MAX_DEPTH = 100  # elements nested in one narrative
_XHTML = XHTML_NS + "}"  # expat's names: "namespace}local"
_XML = "http://www.w3.org/XML/1998/namespace}"

ELEMENTS = frozenset((
    "a", "abbr", "acronym", "b", "big", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd",
    "dfn", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "li", "ol", "p", "pre",
    "q", "samp", "small", "span", "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt",
    "ul", "var",
    "address", "bdo", "kbd", "map", "area"))  # the R4 schema's, beyond txt-1's XPath
ATTRIBUTES = frozenset((
    "abbr", "accesskey", "align", "alt", "axis", "bgcolor", "border", "cellhalign", "cellpadding", "cellspacing",
    "cellvalign", "char", "charoff", "charset", "cite", "class", "colspan", "compact", "coords", "dir", "frame",
    "headers", "height", "href", "hreflang", "hspace", "id", "lang", "longdesc", "name", "nowrap", "rel", "rev",
    "rowspan", "rules", "scope", "shape", "span", "src", "start", "style", "summary", "tabindex", "title", "type",
    "valign", "value", "vspace", "width",
    "nohref", "ismap", "usemap", _XML + "lang", _XML + "space"))  # the R4 schema's, beyond txt-1's XPath
_TAGS = frozenset(_XHTML + name for name in ELEMENTS)
_DIV, _IMG = _XHTML + "div", _XHTML + "img"
_URLS = frozenset(("href", "src", "cite", "longdesc", "usemap"))
# A URL's scheme as a browser reads it: after leading spaces and control characters, ignoring tabs and newlines.
# Spaces are ignored too: XML turns a literal tab or newline in an attribute into one, HTML does not.
_SCHEME = re.compile(r"[\x00-\x20]*([a-zA-Z][a-zA-Z0-9+.\- \t\n\r]*):")
_NO_BLANKS = str.maketrans("", "", " \t\n\r")
_SCRIPTS = frozenset(("javascript", "vbscript"))

Problem = tuple[str, str]  # (IssueType code, what is wrong), as capability.validation reports it


def check_narrative(div: str) -> Problem | None:
    """What makes `div` break R4's narrative rules (the first thing found), or None when it keeps them all."""
    if not div.lstrip().startswith("<div"):
        return "value", "narrative div must hold an XHTML <div> element"
    checker, parser = _Checker(), expat_parser()
    parser.StartElementHandler = checker.start
    parser.EndElementHandler = checker.end
    parser.CharacterDataHandler = checker.text
    try:
        parser.Parse(div, True)
    except _Refused as refused:
        return refused.problem
    except ExpatError as exc:
        return "value", f"narrative is not well-formed XHTML: {expat_error(exc)}"
    except UnicodeError:  # a lone surrogate
        return "value", "narrative is not well-formed XHTML: it holds a character that is not Unicode text"
    if not checker.content:
        return "invalid", "narrative has no content: it needs some non-whitespace text or an image (txt-2)"
    return None


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.problem = (code, message)


class _Checker:
    """expat's handlers: each element and attribute is checked as it is read, the first fault stops the parse."""

    __slots__ = ("depth", "content")

    def __init__(self) -> None:
        self.depth = 0
        self.content = False  # txt-2: non-whitespace text, or an image

    def start(self, name: str, attributes: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Refused("value", f"narrative nested deeper than {MAX_DEPTH} elements")
        if self.depth == 1 and name != _DIV:
            raise _Refused("value", f'narrative root must be <div xmlns="{XHTML_NS}">, not {_element(name)}')
        if name not in _TAGS:
            raise _Refused("invalid", f"{_element(name)} is not allowed in narrative (txt-1)")
        for attribute, value in attributes.items():
            if attribute not in ATTRIBUTES:
                raise _Refused("invalid", f"attribute {_attribute(attribute)} on {_element(name)} is not allowed in "
                                          "narrative (txt-1)")
            if attribute in _URLS:
                _check_url(name, attribute, value)
        if name == _IMG and "src" in attributes:
            self.content = True

    def end(self, name: str) -> None:
        self.depth -= 1

    def text(self, text: str) -> None:
        if not self.content and not text.isspace():
            self.content = True


def _check_url(element: str, attribute: str, value: str) -> None:
    found = _SCHEME.match(value)
    scheme = found.group(1).translate(_NO_BLANKS).lower() if found else ""
    if scheme in _SCRIPTS or scheme == "data" and (element, attribute) != (_IMG, "src"):
        raise _Refused("invalid", f"{scheme}: URL in {attribute} of {_element(element)} is not allowed in "
                                  "narrative (no active content)")


def _element(name: str) -> str:
    """`<b>` for an XHTML element, with its namespace (or the lack of one) for any other."""
    namespace, _, local = name.rpartition("}")
    if namespace == XHTML_NS:
        return f"<{local}>"
    return f"<{local}> in namespace {namespace}" if namespace else f"<{local}> outside the XHTML namespace"


def _attribute(name: str) -> str:
    namespace, _, local = name.rpartition("}")
    if namespace + "}" == _XML:
        return "xml:" + local
    return f"{local} in namespace {namespace}" if namespace else local
