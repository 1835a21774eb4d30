"""The search query IR: a small typed tree every backend compiles and the in-memory matcher evaluates.

`Observation?code=http://loinc.org|8310-5&date=ge2020&_sort=-date` becomes a `Query` whose `where` is a
conjunction (AND) of `Clause`s, each a disjunction (OR) of predicates. Operands are already normalised
exactly like the index entries in search/entries.py, so backends compare like with like.
search/matcher.py is the reference for what each predicate means; backends implement the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Union

Prefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


@dataclass(frozen=True, slots=True)
class TokenPred:
    """system None: any system; system "": no system. code None: any code (`system|`).

    modifier: None | "not" | "text" | "of-type" | "in" | "not-in" | "above" | "below".
    For "text", `code` holds the normalised text. For "of-type", (type_system, type_code) and `code`
    (the identifier value). For "in"/"not-in"/"above"/"below", `codes` holds the expanded
    (system, code) pairs, resolved when the query is parsed.
    """

    system: str | None
    code: str | None
    modifier: str | None = None
    type_system: str | None = None
    type_code: str | None = None
    codes: tuple[tuple[str | None, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StringPred:
    """modifier None: starts-with on `norm`; "exact": equals `exact`; "contains": substring of `norm`."""

    value: str
    modifier: str | None = None


@dataclass(frozen=True, slots=True)
class DatePred:
    """The search value's implicit range [lo, hi] (inclusive, normalised instants) and its prefix."""

    prefix: Prefix
    lo: str
    hi: str


@dataclass(frozen=True, slots=True)
class NumberPred:
    """The search value, its implicit range [lo, hi) from its precision, and its prefix."""

    prefix: Prefix
    value: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class QuantityPred:
    """Like NumberPred, plus system/code (None: any). `system` "" with a code means `value||code`:
    the code may match either the entry's code or its unit."""

    prefix: Prefix
    value: float
    lo: float
    hi: float
    system: str | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class ReferencePred:
    """A reference target: local (`target_type` may be None when only an id was given), or `url` for an
    absolute URL / canonical (with optional `version`). modifier "identifier" uses identifier_*."""

    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None
    version: str | None = None
    modifier: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriPred:
    """modifier None: equals; "above": the entry is a prefix of `value`; "below": `value` is a prefix of the entry."""

    value: str
    modifier: str | None = None


@dataclass(frozen=True, slots=True)
class CompositePred:
    """All component predicates must hold on one CompositeEntry (components in the parameter's order)."""

    components: tuple["Pred", ...]


@dataclass(frozen=True, slots=True)
class MissingPred:
    """`:missing=true` (no entry for the parameter) or `:missing=false` (at least one)."""

    missing: bool


@dataclass(frozen=True, slots=True)
class ChainPred:
    """`subject:Patient.name=peter`: the resource references (through `param`) a resource of one of
    `target_types` that matches `where` (itself possibly chained)."""

    target_types: tuple[str, ...]
    where: tuple["Clause", ...]


@dataclass(frozen=True, slots=True)
class HasPred:
    """`_has:Observation:patient:code=1234`: some `source_type` resource references this one through
    `source_param` and matches `where`."""

    source_type: str
    source_param: str
    where: tuple["Clause", ...]


@dataclass(frozen=True, slots=True)
class AnyOfPred:
    """OR across parameters: holds when any of `clauses` holds (a compartment: `subject` or `performer`
    references the patient, or the resource is the patient). Sits alone in a Clause with param
    "_compartment" and param_type "special"."""

    clauses: tuple["Clause", ...]


Pred = Union[TokenPred, StringPred, DatePred, NumberPred, QuantityPred, ReferencePred, UriPred,
             CompositePred, MissingPred, ChainPred]


@dataclass(frozen=True, slots=True)
class Clause:
    """One search parameter occurrence: OR over `preds`, evaluated against entries of `param`.

    `param` is the SearchParameter code (e.g. "code", "_lastUpdated"); `param_type` its type.
    A `HasPred` clause has param "_has" and a single pred.
    """

    param: str
    param_type: str
    preds: tuple[Union[Pred, HasPred, AnyOfPred], ...]
    # every searched type has at most one value for this date parameter, a date/dateTime/instant (so its range
    # spans at most a year): set by the parser from the registry; lets storage bound its range scans
    single_date: bool = False


@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # a SearchParameter code, or "_id" / "_lastUpdated"
    param_type: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Include:
    """`_include=Observation:subject:Patient` (reverse=False) or `_revinclude=Provenance:target`."""

    source_type: str  # the type holding the reference ("*" for `_include=*`)
    param: str  # the reference SearchParameter code ("*" for all)
    target_type: str | None = None
    reverse: bool = False
    iterate: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    """A whole search. `types` empty means every type (system search without `_type`)."""

    types: tuple[str, ...]
    where: tuple[Clause, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    cursor: str | None = None  # opaque keyset cursor from a previous page
    includes: tuple[Include, ...] = ()
    total: Literal["none", "estimate", "accurate"] = "none"
    summary: str | None = None  # None | "true" | "text" | "data" | "count" | "false"
    elements: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())  # parameters left out under lenient handling, for the outcome
    used: tuple[tuple[str, str], ...] = ()  # the (name, value) pairs applied, in request order, for the self link
