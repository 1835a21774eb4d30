"""HL7 v2 DTM/DT/TM values as FHIR date, dateTime, instant and time (design note b8).

`YYYY[MM[DD[HH[MM[SS[.S…]]]]]][±ZZZZ]`: a value with a time and no offset gets the offset the connector's zone has
at that instant; a date keeps its precision (`2024`, `2024-03`, `2024-03-15`); an hour alone becomes `HH:00`."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as fixed
from functools import lru_cache
from zoneinfo import ZoneInfo

_DTM = re.compile(r"(\d{4})(\d{2})?(\d{2})?(?:(\d{2})(\d{2})?(?:(\d{2})(\.\d{1,4})?)?)?([+-]\d{4})?")
_TM = re.compile(r"(\d{2})(\d{2})?(?:(\d{2})(\.\d{1,4})?)?([+-]\d{4})?")


class InvalidTime(ValueError):
    """A value that is no v2 date/time (the caller names the field)."""


@lru_cache(maxsize=4096)  # a message repeats its times (OBX-14 of every result), and each costs a zone lookup
def to_fhir(value: str, kind: str, zone: ZoneInfo) -> str:
    """`value` (a v2 DTM, DT or TM) as the FHIR primitive `kind`: date, dateTime, instant or time."""
    value = value.strip()
    if kind == "time":
        return _time(value)
    match = _DTM.fullmatch(value)
    if not match:
        raise InvalidTime(f"{value!r} is not a date/time (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ])")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as error:
        raise InvalidTime(f"{value!r} is not a valid date/time ({error})") from error
    date = "-".join(p for p in (year, month, day) if p)
    if kind == "date" or hour is None:
        if kind == "instant":
            raise InvalidTime(f"{value!r} has no time of day (an instant needs one)")
        return date
    if not (month and day):
        raise InvalidTime(f"{value!r} has a time but no full date")
    clock = f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
    return f"{date}T{clock}{_offset(offset, date, clock, zone)}"


def _offset(offset: str | None, date: str, clock: str, zone: ZoneInfo) -> str:
    if offset is None:
        local = datetime.fromisoformat(f"{date}T{clock.split('.')[0]}").replace(tzinfo=zone)
        delta = local.utcoffset() or timedelta(0)
    else:
        sign = -1 if offset[0] == "-" else 1
        hours, minutes = int(offset[1:3]), int(offset[3:5])
        if hours > 14 or minutes > 59:
            raise InvalidTime(f"{offset!r} is not a UTC offset")
        delta = sign * timedelta(hours=hours, minutes=minutes)
    minutes, rest = divmod(delta, timedelta(minutes=1))
    if rest:  # a local mean time with seconds: as strftime writes it
        text = datetime(2000, 1, 1, tzinfo=fixed(delta)).strftime("%z")
        return f"{text[:3]}:{text[3:]}"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{'-' if delta < timedelta(0) else '+'}{hours:02d}:{minutes:02d}"


def _time(value: str) -> str:
    match = _TM.fullmatch(value)
    if not match:
        raise InvalidTime(f"{value!r} is not a time (HH[MM[SS[.S]]])")
    hour, minute, second, fraction, _offset_ignored = match.groups()  # FHIR time has no offset
    if int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        raise InvalidTime(f"{value!r} is not a valid time")
    return f"{hour}:{minute or '00'}:{second or '00'}{fraction or ''}"
