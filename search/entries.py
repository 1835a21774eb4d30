"""Typed search index entries: what a resource's current version is found by.

One shape per SearchParameter type (DESIGN.md, "Data model"). Extraction (search/extract.py) turns a
resource into a list of these; each storage backend stores them with the current version and replaces
them with it; the in-memory matcher (search/matcher.py) evaluates the query IR against them.

Normalised values, shared by every backend and the matcher:
- instants are strings `YYYY-MM-DDTHH:MM:SS.ffffff` in UTC, fixed width, so they compare as text;
  an open end of a Period is `MIN_INSTANT` / `MAX_INSTANT`;
- numbers and quantity values are floats for the bounds of the implicit range their precision gives
  (`72.50` covers [72.495, 72.505)), plus the value itself;
- strings carry `norm` (case-folded, accents removed, white space collapsed) and `exact` (as written).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

MIN_INSTANT = "0001-01-01T00:00:00.000000"
MAX_INSTANT = "9999-12-31T23:59:59.999999"


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """token: Coding / CodeableConcept / Identifier / ContactPoint / code / boolean / id."""

    param: str
    system: str | None
    code: str | None
    text: str | None = None  # normalised display / CodeableConcept.text / Identifier.type.text, for :text
    type_system: str | None = None  # Identifier.type.coding[].system, for :of-type
    type_code: str | None = None  # Identifier.type.coding[].code, for :of-type


@dataclass(frozen=True, slots=True)
class StringEntry:
    param: str
    norm: str
    exact: str


@dataclass(frozen=True, slots=True)
class DateEntry:
    """date: the value's implicit range [lo, hi], both inclusive, as normalised UTC instants."""

    param: str
    lo: str
    hi: str


@dataclass(frozen=True, slots=True)
class NumberEntry:
    """number: the value and its implicit range [lo, hi) from its precision."""

    param: str
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityEntry:
    param: str
    value: float
    lo: float
    hi: float
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class ReferenceEntry:
    """reference: a local `Type/id`, an absolute URL, or a canonical (`url` without `|version`)."""

    param: str
    target_type: str | None
    target_id: str | None
    url: str | None = None  # absolute URL or canonical; None for a plain local reference
    version: str | None = None  # canonical version after '|'
    identifier_system: str | None = None  # Reference.identifier, for :identifier
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriEntry:
    param: str
    value: str


@dataclass(frozen=True, slots=True)
class CompositeEntry:
    """composite: one tuple of component entries taken from the same repetition of the base element.

    Each component is an entry of its component parameter's type; its `param` is the component's
    SearchParameter code (e.g. `code`, `value-quantity`).
    """

    param: str
    components: tuple["Entry", ...]


Entry = Union[TokenEntry, StringEntry, DateEntry, NumberEntry, QuantityEntry, ReferenceEntry, UriEntry, CompositeEntry]
