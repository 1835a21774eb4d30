"""date parameters: a value's implicit range (its precision) against each entry's range, by prefix
(search/params/prefixes.py). Entries: date, dateTime, instant, Period (open ends), Timing events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from hearth.search.entries import MAX_INSTANT, MIN_INSTANT, DateEntry
from hearth.search.ir import DatePred
from hearth.search.normalize import date_range
from hearth.search.params.common import BadValue, Converter, ParseContext, prefixed, unescape
from hearth.search.params.prefixes import comparisons, ranges_test

TYPE = "date"
MODIFIERS: frozenset[str] = frozenset()


# --- parsing ----------------------------------------------------------------------------------------------------

def pred(prefix: str, lo: str, hi: str) -> DatePred:
    """`prefix` applied to a search range [lo, hi] (normalised instants, both inclusive)."""
    return DatePred(comparisons(prefix, "date", lo, hi))


def parse(context: ParseContext, param: Any, modifier: str | None, text: str) -> DatePred:
    # a space where the `+hh:mm` of a zone was is an unencoded `+` in the URL
    prefix, value = prefixed(unescape(text).replace(" ", "+"))
    try:
        lo, hi = date_range(value)
    except ValueError as exc:
        raise BadValue(str(exc)) from None
    if prefix == "ap":
        lo, hi = _widened(lo, hi, context.now)
    return pred(prefix, lo, hi)


def _widened(lo: str, hi: str, now: datetime) -> tuple[str, str]:
    """`ap`: the range widened on both sides by 10% of the gap between its start and now."""
    start, end = datetime.fromisoformat(lo), datetime.fromisoformat(hi)
    gap = abs(now - start) / 10
    try:
        lo = (start - gap).isoformat(timespec="microseconds")
    except OverflowError:
        lo = MIN_INSTANT
    try:
        hi = (end + gap).isoformat(timespec="microseconds")
    except OverflowError:
        hi = MAX_INSTANT
    return lo, hi


# --- extraction -------------------------------------------------------------------------------------------------

def _date(value: Any, code: str, base_url: str | None, out: list) -> None:
    if isinstance(value, str):
        try:
            out.append(DateEntry(code, *date_range(value)))
        except ValueError:
            pass  # not a valid date: validation rejects these on write; never fail indexing over one


def _period(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is not dict:
        return
    start, end = value.get("start"), value.get("end")
    if start is None and end is None:
        return
    try:
        lo = date_range(start)[0] if isinstance(start, str) else MIN_INSTANT
        hi = date_range(end)[1] if isinstance(end, str) else MAX_INSTANT
    except ValueError:
        return
    out.append(DateEntry(code, lo, hi))


def _timing(value: Any, code: str, base_url: str | None, out: list) -> None:
    if type(value) is dict:
        events = value.get("event")
        for event in events if isinstance(events, list) else () if events is None else (events,):
            _date(event, code, base_url, out)


INSTANT_TYPES = frozenset({"date", "dateTime", "instant"})  # one value each: a range of a year at most
CONVERTERS: dict[str, Converter] = {**{t: _date for t in INSTANT_TYPES}, "Period": _period, "Timing": _timing}


# --- matching ---------------------------------------------------------------------------------------------------

def _test(p: DatePred) -> Callable[[DateEntry], bool]:
    return ranges_test(p.ranges)


TESTS = {DatePred: _test}
