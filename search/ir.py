"""The search query IR: a small typed tree every backend compiles and the in-memory matcher evaluates.

`Observation?code=http://loinc.org|8310-5&date=ge2020&_sort=-date` becomes a `Query` whose `where` is a
conjunction (AND) of `Clause`s, each a disjunction (OR) of predicates. A predicate carries its whole meaning,
resolved when the query is parsed (search/params/): the token keys an entry must have, whether the predicate is
negated, the comparisons a number, date or quantity prefix stands for (search/params/prefixes.py). Operands are
normalised exactly like the index entries in search/entries.py, so a backend compares like with like and decides
nothing: it translates. search/matcher.py is the reference evaluation.

Beyond the predicates, the IR fixes what every backend does alike:
- the order: the sort keys, then creation order (the order resources were first created in; ties after the sort
  keys follow it, in the direction of the last sort key); without `_sort`, creation order alone;
- paging: a page after (or before) a `Keyset`, the key values of a row in that order (search/paging.py signs them
  into cursors; a backend gives back the key values of a page's first and last rows);
- includes: `include_steps`, the one definition of what `_include`/`_revinclude` (`:iterate`) bring along, to a
  fixpoint, within `Query.include_limit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator, Hashable, Iterable, Literal, Sequence, TypeVar, Union

Direction = Literal["next", "prev"]


# --- comparisons (number, date, quantity) -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Bound:
    """`entry.<field> <op> operand`: one bound of an entry's range (`lo`, `hi`: search/entries.py, both inclusive
    for dates) or its `value` (numbers, quantities), compared with a search operand."""

    field: Literal["lo", "hi", "value"]
    op: Literal["<", "<=", ">", ">="]
    operand: str | float


Ranges = tuple[tuple[Bound, ...], ...]
"""Comparisons as an OR of ANDs: an entry matches when all bounds of one alternative hold."""


# --- value predicates -------------------------------------------------------------------------------------------

TokenKey = tuple[Union[str, None], Union[str, None]]
"""(system, code) an entry may have: system None any system, "" no system; code None any code; never both None."""


@dataclass(frozen=True, slots=True)
class TokenPred:
    """Some token entry has one of `keys` (`code`, `system|code`, `|code`, `system|`, and the codes `:in`,
    `:above`, `:below` expand to). `negated` (`:not`, `:not-in`): the resource matches when none has one."""

    keys: tuple[TokenKey, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class TokenTextPred:
    """`:text`: some token entry's normalised text starts with `text`."""

    text: str


@dataclass(frozen=True, slots=True)
class OfTypePred:
    """`:of-type`: some Identifier entry has this type coding (system, code) and this value."""

    type_system: str
    type_code: str
    value: str


@dataclass(frozen=True, slots=True)
class StringPred:
    """modifier None: the entry's normalised form starts with `norm`; "contains": holds `norm`; "exact": the entry
    as written equals `exact` (so its normalised form equals `norm`)."""

    norm: str
    modifier: Literal["contains", "exact"] | None = None
    exact: str | None = None


@dataclass(frozen=True, slots=True)
class DatePred:
    """The entry's range [lo, hi] meets `ranges` (the prefix and the search value's range, resolved)."""

    ranges: Ranges


@dataclass(frozen=True, slots=True)
class NumberPred:
    """The entry's value meets `ranges` (the prefix and the search value's precision, resolved)."""

    ranges: Ranges


UnitKey = tuple[Union[str, None], Union[str, None], Union[str, None]]
"""(system, code, unit) a quantity entry must have; None: any."""


@dataclass(frozen=True, slots=True)
class QuantityPred:
    """The entry's value meets `ranges`, and its units one of `units` (`value||code`: the code or the unit)."""

    ranges: Ranges
    units: tuple[UnitKey, ...] = ((None, None, None),)


@dataclass(frozen=True, slots=True)
class ReferencePred:
    """A reference target: local (`target_type` may be None when only an id was given), or `url` for an
    absolute URL / canonical (with optional `version`). modifier "identifier" uses identifier_*
    (identifier_system None: any system, "": none; identifier_value None: any value)."""

    target_type: str | None = None
    target_id: str | None = None
    url: str | None = None
    version: str | None = None
    modifier: str | None = None
    identifier_system: str | None = None
    identifier_value: str | None = None


@dataclass(frozen=True, slots=True)
class UriPred:
    """The entry equals one of `values`; `below`: starts with one of them (`:above` lists the value's prefixes)."""

    values: tuple[str, ...]
    below: bool = False


@dataclass(frozen=True, slots=True)
class CompositePred:
    """All component predicates (never negated) hold on one CompositeEntry with as many components, position by
    position."""

    components: tuple["Pred", ...]


@dataclass(frozen=True, slots=True)
class MissingPred:
    """`:missing=true` (no entry for the parameter) or `:missing=false` (at least one)."""

    missing: bool


# --- nested predicates ------------------------------------------------------------------------------------------

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


Pred = Union[TokenPred, TokenTextPred, OfTypePred, StringPred, DatePred, NumberPred, QuantityPred, ReferencePred,
             UriPred, CompositePred, MissingPred, ChainPred]


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


# --- result parameters ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SortKey:
    param: str  # a SearchParameter code, or "_id" / "_lastUpdated"
    param_type: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Keyset:
    """A place in a search's order: the key values of one row (its sort values, then its creation key, as its
    backend gave them back). "next": the rows after it; "prev": the rows before it."""

    values: tuple
    direction: Direction = "next"


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
    cursor: str | None = None  # the opaque `_cursor` as the client sent it (search/paging.py reads it into `after`)
    includes: tuple[Include, ...] = ()
    total: Literal["none", "estimate", "accurate"] = "none"
    summary: str | None = None  # None | "true" | "text" | "data" | "count" | "false"
    elements: tuple[str, ...] = ()
    ignored: tuple[str, ...] = field(default=())  # parameters left out under lenient handling, for the outcome
    used: tuple[tuple[str, str], ...] = ()  # the (name, value) pairs applied, in request order, for the self link
    after: Keyset | None = None  # the page starts after (or ends before) this row
    include_limit: int = 1000  # resources the includes bring along at most (HEARTH_MAX_COUNT)


# --- includes ---------------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)
IncludeSteps = Generator[tuple[list[K], Include], Iterable[K], tuple[list[K], bool]]


def include_steps(matches: Sequence[K], includes: Sequence[Include], limit: int) -> IncludeSteps:
    """What `includes` bring along for a page of `matches`, and whether it was cut at `limit`: the one definition
    of include iteration, for every backend.

    Every include applies to the matches; the `:iterate` ones also to what was included, round after round, until
    a round finds nothing new (a fixpoint: a cycle ends there). Each resource comes once and never repeats a
    match, in the order found (within a round: include by include, each include's in the order the backend gives,
    by type and id on every backend). Past `limit` resources the rest are left out (True).

    A generator, so a backend can answer its lookups synchronously (`include_closure`) or not: it yields
    (frontier, include), a lookup of one include from a set of resources (keys: whatever identifies a resource
    on that backend), and is sent the keys that lookup reaches.
    """
    seen = set(matches)
    found: list[K] = []
    frontier, active = list(matches), list(includes)
    iterating = [include for include in includes if include.iterate]
    while frontier and active:
        fresh: list[K] = []
        for include in active:
            for key in (yield frontier, include):
                if key in seen:
                    continue
                if len(found) + len(fresh) >= limit:
                    return found + fresh, True
                seen.add(key)
                fresh.append(key)
        found += fresh
        frontier, active = fresh, iterating
    return found, False


def include_closure(matches: Sequence[K], includes: Sequence[Include],
                    reach: Callable[[list[K], Include], Iterable[K]], limit: int) -> tuple[list[K], bool]:
    """`include_steps` with each lookup answered by `reach(frontier, include)`."""
    steps = include_steps(matches, includes, limit)
    try:
        request = next(steps)
        while True:
            request = steps.send(reach(*request))
    except StopIteration as done:
        return done.value
