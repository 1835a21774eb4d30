"""number parameters: an entry's value against the search value and the range its precision gives, by prefix
(search/params/prefixes.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable

from hearth.search.entries import NumberEntry
from hearth.search.ir import NumberPred, Ranges
from hearth.search.normalize import number_range
from hearth.search.params.common import BadValue, Converter, ParseContext, prefixed, unescape
from hearth.search.params.prefixes import comparisons, ranges_test

TYPE = "number"
MODIFIERS: frozenset[str] = frozenset()


# --- parsing ----------------------------------------------------------------------------------------------------

def resolved(prefix: str, value: float, lo: float, hi: float) -> Ranges:
    """`prefix` applied to a search value and its precision range [lo, hi)."""
    return comparisons(prefix, "number", lo, hi, value)


def pred(prefix: str, value: float, lo: float, hi: float) -> NumberPred:
    return NumberPred(resolved(prefix, value, lo, hi))


def parse_number(text: str) -> Ranges:
    """The comparisons of a number search value with its optional prefix (numbers and quantities)."""
    prefix, rest = prefixed(text)
    try:
        number, lo, hi = number_range(rest)
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if prefix == "ap":  # widened by 10% of the value
        spread = abs(number) / 10
        lo, hi = min(lo, number - spread), max(hi, number + spread)
    return resolved(prefix, number, lo, hi)


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> NumberPred:
    return NumberPred(parse_number(unescape(text)))


# --- extraction -------------------------------------------------------------------------------------------------

def value_range(number: Any) -> tuple[float, float, float] | None:
    """(value, lo, hi) of a JSON number (int, Decimal, float) or numeric string; None when it is not one."""
    if isinstance(number, bool) or not isinstance(number, (int, Decimal, float, str)):
        return None
    try:
        return number_range(repr(number) if isinstance(number, float) else number)
    except ValueError:
        return None


def _number(value: Any, code: str, base_url: str | None, out: list) -> None:
    found = value_range(value)
    if found is not None:
        out.append(NumberEntry(code, *found))


CONVERTERS: dict[str, Converter] = {t: _number for t in ("integer", "decimal", "positiveInt", "unsignedInt")}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: NumberPred) -> Callable[[NumberEntry], bool]:
    return ranges_test(p.ranges)


TESTS = {NumberPred: _test}
