"""Value normalisation shared by index extraction, the query parser and the in-memory matcher.

Everything here is pure and cheap, so both sides of a comparison normalise the same way
(see search/entries.py for the normalised forms).
"""

from __future__ import annotations

import calendar
import functools
import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal

from hearth.capability.resource_types import is_resource_type
from hearth.search.entries import MAX_INSTANT, MIN_INSTANT


@functools.lru_cache(maxsize=8192)  # displays and names repeat a lot across resources
def normalize_string(text: str) -> str:
    """Case-fold, strip accents (NFKD minus combining marks), collapse white space, strip."""
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(text.casefold().split())


# --- dates ---------------------------------------------------------------------------------------

_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?",
    re.ASCII,  # `\d` is 0-9 only: other scripts' digits are no FHIR date
)


@functools.lru_cache(maxsize=64)
def _offset(zone: str | None) -> timedelta:
    """The UTC offset of `Z`, `+hh:mm` or `-hh:mm`; none (read as UTC) is zero."""
    if zone is None or zone == "Z":
        return timedelta(0)
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(f"invalid time zone offset {zone!r}")
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if zone[0] == "-" else offset


@functools.lru_cache(maxsize=4096)  # resources of one encounter share their dates
def date_range(value: str) -> tuple[str, str]:
    """The implicit range [lo, hi] (both inclusive) of an R4 date / dateTime / instant, as UTC instants.

    The range spans the precision given: `2020` is the whole year, `2020-03-04T10:00` the whole minute,
    `…T10:00:00.5` a tenth of a second. A date without a time has no zone, so its day boundaries are
    taken in UTC; a time without a zone (allowed in search values, not in resources) is also read as UTC.
    Raises ValueError on malformed input.
    """
    match = _DATE.fullmatch(value)
    if match is None:
        raise ValueError(f"invalid date {value!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if hour is None:  # date precision: UTC day boundaries
        if zone is not None:
            raise ValueError(f"invalid date {value!r}")
        if month is None:
            datetime(int(year), 1, 1)  # validates
            return f"{year}-01-01T00:00:00.000000", f"{year}-12-31T23:59:59.999999"
        if day is None:
            datetime(int(year), int(month), 1)  # validates
            last = calendar.monthrange(int(year), int(month))[1]
            return f"{value}-01T00:00:00.000000", f"{value}-{last:02d}T23:59:59.999999"
        datetime(int(year), int(month), int(day))
        return f"{value}T00:00:00.000000", f"{value}T23:59:59.999999"
    digits = (fraction or "")[:6]
    local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                     int(digits.ljust(6, "0")) if digits else 0)
    try:
        lo = (local - _offset(zone)).isoformat(timespec="microseconds")
    except OverflowError:  # a zone shift past year 1 or 9999: the whole range is beyond the open end
        end = MIN_INSTANT if local.year == 1 else MAX_INSTANT
        return end, end
    # Offsets are whole minutes, so the unit of precision stays aligned in UTC: fill its digits with 9s.
    if second is None:
        return lo, lo[:17] + "59.999999"
    return lo, lo[:20 + len(digits)] + "9" * (6 - len(digits))


# --- numbers -------------------------------------------------------------------------------------

# a decimal as Decimal reads it, less what it also takes and FHIR does not (`_` separators, other scripts' digits,
# Infinity, NaN)
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

def number_range(value: Decimal | int | str) -> tuple[float, float, float]:
    """(value, lo, hi): the implicit range [lo, hi) of a number given its precision.

    `100` covers [99.5, 100.5), `100.00` covers [99.995, 100.005), and an exponent counts significant
    digits: `1e2` (one significant digit) covers [50, 150). (The R4 search page's prose example for
    `1e2` says 95..105, which contradicts its own significant-figures rule; we follow the rule.)
    Raises ValueError for anything that is not a finite number.
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, str) and not _NUMBER.fullmatch(value.strip()):
        raise ValueError(f"invalid number {value[:40]!r}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value if isinstance(value, int) else value.strip())
        if not number.is_finite():
            raise ValueError(f"invalid number {str(value)[:40]!r}")
        half = Decimal(5).scaleb(number.as_tuple().exponent - 1)
        return float(number), float(number - half), float(number + half)
    except (ArithmeticError, AttributeError):  # not a number; or an exponent past what Decimal can compute with
        raise ValueError(f"invalid number {str(value)[:40]!r}") from None


_WHOLE = re.compile(r"[0-9]+")
_LONGEST_WHOLE = 18  # digits: past this, a whole number is more than any bound it is cut to (and int() may refuse it)


def whole_number(text: str, at_most: int) -> int:
    """`text` (ASCII digits, any length) as a whole number cut to `at_most`; ValueError if it is not one."""
    if _WHOLE.fullmatch(text) is None:
        raise ValueError("expected a whole number, 0 or more")
    digits = text.lstrip("0") or "0"
    return at_most if len(digits) > _LONGEST_WHOLE else min(int(digits), at_most)


# --- references and canonicals -------------------------------------------------------------------

_REFERENCE_TAIL = re.compile(r"(?:(.*)/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?")


@functools.lru_cache(maxsize=8192)  # the same patient / encounter is referenced over and over
def split_reference(ref: str, base_url: str | None = None) -> tuple[str | None, str | None, str | None] | None:
    """(type, id, url) of a Reference.reference or a reference search value.

    - `Patient/123` (optionally `/_history/2`): ("Patient", "123", None), a local reference;
    - `123`: (None, "123", None), an id of unknown type (search values only);
    - an absolute URL whose tail is `Type/id`: ("Type", "id", url without `/_history/n`), or a local
      reference when the URL's base is `base_url` (the server's own base);
    - any other URL or URN (`urn:uuid:…`): (None, None, url);
    - a contained reference `#id` (or an empty string): None.
    """
    if not ref or ref.startswith("#"):
        return None
    match = _REFERENCE_TAIL.fullmatch(ref)
    if match is not None and is_resource_type(match.group(2)):
        base, rtype, rid = match.groups()
        if base is None:
            return rtype, rid, None
        if base_url is not None and base.rstrip("/") == base_url.rstrip("/"):
            return rtype, rid, None
        if "://" in base:
            return rtype, rid, f"{base}/{rtype}/{rid}"  # without /_history/n
    if ":" in ref:
        return None, None, ref
    if "/" not in ref:
        return None, ref, None
    return None, None, ref


def split_canonical(value: str) -> tuple[str, str | None]:
    """(url, version) of a canonical `url|version`; version None when absent."""
    url, bar, version = value.partition("|")
    return url, (version or None) if bar else None
