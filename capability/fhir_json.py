"""FHIR JSON in and out, keeping decimals exactly as written (`72.50` stays `72.50`).

Bodies are parsed with the standard library so that every JSON number with a fraction or exponent
becomes a `Decimal` carrying its original digits, and written with orjson, which splices each
`Decimal` back as the same literal. Nothing here ever goes through a float. Integer literals longer
than 18 digits become `Decimal`s too: exact, free of Python's 4,300-digit limit on int(), and
writable (orjson writes no int past 64 bits).

What a client sends is held to FHIR JSON (R4 json.html) beyond JSON's grammar: no property name twice
in one object, no lone surrogate (JSON lets `\\ud800` through, but that string is no Unicode and could
never be written back), and no character below U+0020 in a string other than tab, LF and CR ("Strings
SHALL NOT contain Unicode character points below 32, except for u0009, u000A and u000D").
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson


class JsonSyntaxError(ValueError):
    """The bytes are not one well-formed FHIR JSON document."""


# Every escape that can hide a forbidden character, each starting at a backslash the scan has not consumed (so
# an escaped backslash `\\` is skipped whole). Group 1 holds the harmless ones: `\\`, a surrogate pair, \t \n \r;
# group 2 a colon written as an escape (see `loads`). Raw control characters are refused by the parser itself
# (JSON's grammar), raw surrogates by the UTF-8 decoder.
_ESCAPE = re.compile(r"\\(?:(\\|u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u000[9aAdD])|(u003[aA])"
                     r"|u[dD][89a-fA-F]|u00[01]|[bf])")
_INT_DIGITS = 18  # longer integer literals may not fit 64 bits: they become Decimals


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialise {type(value).__name__}")


def loads(data: bytes | str, trusted: bool = False) -> Any:
    """Parse FHIR JSON; numbers with a fraction or exponent, and integers past 18 digits, become exact `Decimal`s.

    `trusted`: the bytes are Hearth's own output (a stored body, a response), which cannot hold a duplicate name
    or a lone surrogate but may quote a client's control character in an OperationOutcome: those checks are
    skipped."""
    try:
        text = bytes(data).decode("utf-8") if isinstance(data, (bytes, bytearray, memoryview)) else data
        if trusted:
            return json.loads(text, **_NUMBERS)
        escaped_colon = _check_escapes(text)
        document = json.loads(text, **_NUMBERS)
        # A repeated property name, without a hook on every object (which costs twice as much): each ':' of the
        # text ends a property name or stands in a string (JSON writes it otherwise only as \u003a), and writing
        # the document back keeps every one of them unless a repeated name dropped a property. Equal counts prove
        # there is none; else the exact parse settles it.
        if escaped_colon or text.count(":") != _colons(document):
            json.loads(text, object_pairs_hook=_object, **_NUMBERS)  # raises naming the repeated name, if any
        return document
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonSyntaxError(str(exc)) from None
    except RecursionError:
        raise JsonSyntaxError("JSON nested too deeply") from None


def _integer(literal: str) -> int | Decimal:
    return int(literal) if len(literal) <= _INT_DIGITS else Decimal(literal)


def _colons(document: Any) -> int:
    """The colons of `document` written back as JSON (-1 when it is nested past what orjson writes)."""
    try:
        return dumps(document).count(b":")
    except TypeError:
        return -1


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise JsonSyntaxError(f"the property name {name[:80]!r} appears twice in one object")
            seen.add(name)
    return obj


def _check_escapes(text: str) -> bool:
    """Refuse a lone surrogate or a control character (JsonSyntaxError); whether a colon is written as an escape."""
    escaped_colon = False
    for match in _ESCAPE.finditer(text):
        if match.group(2) is not None:
            escaped_colon = True
        elif match.group(1) is None:
            start = match.start()
            escape = text[start:start + 6] if match.group()[1] == "u" else match.group()
            what = "a lone surrogate" if escape[2:3] in ("d", "D") else "a control character (below U+0020)"
            line = text.count("\n", 0, start) + 1
            column = start - text.rfind("\n", 0, start)
            raise JsonSyntaxError(f"{escape} at line {line} column {column} is {what}, which FHIR JSON strings "
                                  "cannot hold")
    return escaped_colon


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


_NUMBERS: dict[str, Any] = {"parse_float": Decimal, "parse_int": _integer, "parse_constant": _reject_constant}


def dumps(value: Any, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON, decimals as written."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)


def pretty_bytes(body: bytes) -> bytes:
    """Re-indent JSON bytes Hearth wrote without changing any value."""
    return dumps(loads(body, trusted=True), pretty=True)
