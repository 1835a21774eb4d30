"""What each R4 search prefix means (http://hl7.org/fhir/R4/search.html#prefix), as comparisons: the one place
number, date and quantity prefixes are resolved. Every backend and the matcher only evaluate the `Bound`s.

Dates compare ranges: the search value's range [plo, phi] against the entry's [lo, hi], all bounds inclusive:
    eq  plo <= lo and hi <= phi        (the entry's range lies within the search range)
    ne  lo < plo or hi > phi
    gt  hi > phi                       (the range above the search value overlaps the entry)
    lt  lo < plo
    ge  lo >= plo or hi > phi          (gt or eq)
    le  lo < plo or hi <= phi          (lt or eq)
    sa  lo > phi                       (starts after the search range)
    eb  hi < plo                       (ends before it)
    ap  lo <= phi and hi >= plo        (the ranges overlap; the parser has widened `ap` values by 10% of the gap
                                        to now)
Numbers and quantities compare the entry's value t with the search value v and its precision range [lo, hi)
(`100` means [99.5, 100.5), `gt100` greater than exactly 100):
    eq  lo <= t < hi    ne  t < lo or t >= hi    gt  t > v    lt  t < v    ge  t >= v    le  t <= v
    sa  t >= hi         eb  t < lo               ap  lo <= t <= hi (the parser has widened [lo, hi] by 10% of v)
"""

from __future__ import annotations

from typing import Any, Callable, Literal

from hearth.search.ir import Bound, Ranges
from hearth.search.params.common import Term, compiled

_DATES: dict[str, tuple[tuple[tuple[str, str, str], ...], ...]] = {  # (entry field, operator, search operand)
    "eq": ((("lo", ">=", "lo"), ("hi", "<=", "hi")),),
    "ne": ((("lo", "<", "lo"),), (("hi", ">", "hi"),)),
    "gt": ((("hi", ">", "hi"),),),
    "lt": ((("lo", "<", "lo"),),),
    "ge": ((("lo", ">=", "lo"),), (("hi", ">", "hi"),)),
    "le": ((("lo", "<", "lo"),), (("hi", "<=", "hi"),)),
    "sa": ((("lo", ">", "hi"),),),
    "eb": ((("hi", "<", "lo"),),),
    "ap": ((("lo", "<=", "hi"), ("hi", ">=", "lo")),),
}
_NUMBERS: dict[str, tuple[tuple[tuple[str, str, str], ...], ...]] = {
    "eq": ((("value", ">=", "lo"), ("value", "<", "hi")),),
    "ne": ((("value", "<", "lo"),), (("value", ">=", "hi"),)),
    "gt": ((("value", ">", "value"),),),
    "lt": ((("value", "<", "value"),),),
    "ge": ((("value", ">=", "value"),),),
    "le": ((("value", "<=", "value"),),),
    "sa": ((("value", ">=", "hi"),),),
    "eb": ((("value", "<", "lo"),),),
    "ap": ((("value", ">=", "lo"), ("value", "<=", "hi")),),
}


def comparisons(prefix: str, kind: Literal["date", "number"], lo: str | float, hi: str | float,
                value: float | None = None) -> Ranges:
    """The comparisons `prefix` means for a search value with range [lo, hi] (`value`: the number itself), over
    an entry's range (dates) or its value (numbers and quantities)."""
    table = _DATES if kind == "date" else _NUMBERS
    operands = {"lo": lo, "hi": hi, "value": value}
    return tuple(tuple(Bound(field, op, operands[operand])  # type: ignore[arg-type]
                       for field, op, operand in alternative) for alternative in table[prefix])


def ranges_test(ranges: Ranges) -> Callable[[Any], bool]:
    """The in-memory test of `ranges` on one entry (its `lo`, `hi`, `value` attributes)."""
    return compiled(range_terms(ranges))


def range_terms(ranges: Ranges) -> list[list[Term]]:
    """`ranges` as terms of search/params/common.py `compiled`."""
    return [[(b.field, b.op, b.operand) for b in alternative] for alternative in ranges]
