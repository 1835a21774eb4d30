"""quantity parameters: an entry's value as for numbers (search/params/number.py), and its units: `system|code`
both equal, `||code` the entry's code or its unit equal to it, `system|` the system, none given any. No unit
conversion. A Range is indexed as one entry whose value is its low end (compared by that value, not its span: a
known simplification); Money as a quantity in ISO 4217."""

from __future__ import annotations

import sys
from typing import Any, Callable

from hearth.search.entries import QuantityEntry
from hearth.search.ir import QuantityPred, UnitKey
from hearth.search.params.common import BadValue, Converter, ParseContext, compiled, split, unescape
from hearth.search.params.number import parse_number, resolved, value_range
from hearth.search.params.prefixes import range_terms

TYPE = "quantity"
MODIFIERS: frozenset[str] = frozenset()
ISO_4217 = "urn:iso:std:iso:4217"
# The open end of a Range without low or high: finite, because JSON (composite rows) cannot carry infinity.
_OPEN_END = sys.float_info.max
_QUANTITIES = ("Quantity", "Age", "Count", "Distance", "Duration", "SimpleQuantity", "MoneyQuantity")


# --- parsing ----------------------------------------------------------------------------------------------------

def units(system: str | None, code: str | None) -> tuple[UnitKey, ...]:
    """The unit alternatives of `number|system|code` (a code without a system, `||code`: the code or the unit)."""
    if code is None:
        return ((system or None, None, None),)
    if system:
        return ((system, code, None),)
    return ((None, code, None), (None, None, code))


def pred(prefix: str, value: float, lo: float, hi: float, system: str | None = None,
         code: str | None = None) -> QuantityPred:
    return QuantityPred(resolved(prefix, value, lo, hi), units(system, code))


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> QuantityPred:
    parts = [unescape(part) for part in split(text, "|")]
    if len(parts) not in (1, 3):
        raise BadValue("a quantity is number, number|system|code or number||code")
    ranges = parse_number(parts[0])
    if len(parts) == 1:
        return QuantityPred(ranges)
    return QuantityPred(ranges, units(parts[1], parts[2] or None))


# --- extraction -------------------------------------------------------------------------------------------------

def _quantity(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict and (found := value_range(value.get("value"))) is not None:
        out.append(QuantityEntry(code, *found, value.get("system"), value.get("code"), value.get("unit")))


def _money(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict and (found := value_range(value.get("value"))) is not None:
        currency = value.get("currency")
        out.append(QuantityEntry(code, *found, ISO_4217 if currency else None, currency, None))


def _range(value: Any, code: str, base_url: str | None, out: list) -> None:
    """A Range as one quantity entry spanning [low's lower bound, high's upper bound]; an absent end is
    open (±float max)."""
    if type(value) is not dict:
        return
    low, high = value.get("low"), value.get("high")
    low_range = value_range(low.get("value")) if type(low) is dict else None
    high_range = value_range(high.get("value")) if type(high) is dict else None
    if low_range is None and high_range is None:
        return
    unit_from = low if low_range is not None else high
    out.append(QuantityEntry(code, (low_range or high_range)[0],
                             low_range[1] if low_range else -_OPEN_END,
                             high_range[2] if high_range else _OPEN_END,
                             unit_from.get("system"), unit_from.get("code"), unit_from.get("unit")))


CONVERTERS: dict[str, Converter] = {**{t: _quantity for t in _QUANTITIES}, "Money": _money, "Range": _range}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: QuantityPred) -> Callable[[QuantityEntry], bool]:
    units = [[(field, "==", wanted) for field, wanted in zip(("system", "code", "unit"), alternative)
              if wanted is not None] for alternative in p.units]
    return compiled(units, range_terms(p.ranges))


TESTS = {QuantityPred: _test}
