"""FHIR JSON in and out, keeping decimals exactly as written (`72.50` stays `72.50`).

Bodies are parsed with the standard library so that every JSON number with a fraction or exponent
becomes a `Decimal` carrying its original digits, and written with orjson, which splices each
`Decimal` back as the same literal. Nothing here ever goes through a float.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


class JsonSyntaxError(ValueError):
    """The bytes are not one well-formed JSON document."""


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))
    raise TypeError(f"cannot serialise {type(value).__name__}")


def loads(data: bytes | str) -> Any:
    """Parse JSON; numbers with a fraction or exponent become exact `Decimal`s."""
    try:
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = bytes(data).decode("utf-8")
        return json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise JsonSyntaxError(str(exc)) from None
    except RecursionError:
        raise JsonSyntaxError("JSON nested too deeply") from None


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def dumps(value: Any, pretty: bool = False) -> bytes:
    """Serialise to compact (or indented) UTF-8 JSON, decimals as written."""
    option = orjson.OPT_INDENT_2 if pretty else 0
    return orjson.dumps(value, default=_default, option=option)


def pretty_bytes(body: bytes) -> bytes:
    """Re-indent stored JSON bytes without changing any value."""
    return dumps(loads(body), pretty=True)
