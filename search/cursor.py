"""Opaque keyset paging cursors: the last row's sort values, its id and the paging direction.

A cursor is url-safe base64 (no padding) of a short MAC followed by compact JSON. The MAC, keyed by a random
secret each database keeps (made when its store first opens it), makes any edit or forgery a 400 instead of a
confusing page, and lets a cursor stay valid across restarts and across the Hearth processes of one database.
A cursor's values must also be ones every backend can bind, even one the MAC accepts (a key may leak): integers
within 64 bits, strings no longer than a URL can carry, no more values than a sort can have.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

from capability.outcome import FhirError

DIRECTIONS = ("next", "prev")
_MAC_BYTES = 8
_SCALARS = (str, int, float, bool, type(None))
_MAX_VALUES = 100  # sort values in one cursor (a sort has one per distinct parameter, and few parameters sort)
_MAX_TEXT = 65_536  # characters of one string value: more than any URL a server takes
_INTEGERS = range(-2 ** 63, 2 ** 63)  # what SQLite and MongoDB store


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(values: tuple, resource_id: str, direction: str, *, key: bytes) -> str:
    """The cursor after (or before) the row with these sort `values` and `resource_id`.

    `values` hold JSON scalars only (str, int, float, bool, None); anything else is a TypeError.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    if not all(isinstance(value, _SCALARS) for value in values):
        raise TypeError("cursor values must be str, int, float, bool or None")
    payload = orjson.dumps([list(values), resource_id, direction])
    return base64.urlsafe_b64encode(_mac(key, payload) + payload).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, *, key: bytes) -> tuple[tuple, str, str]:
    """(values, resource_id, direction) of a cursor made by encode_cursor with `key`; FhirError 400 if it is not
    one, or holds a value no backend could bind."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, _mac(key, payload)):
            raise ValueError("bad MAC")
        values, resource_id, direction = orjson.loads(payload)
        if not (isinstance(values, list) and len(values) <= _MAX_VALUES and all(map(_bindable, values))
                and isinstance(resource_id, str) and len(resource_id) <= _MAX_TEXT and direction in DIRECTIONS):
            raise ValueError("bad shape")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise FhirError(400, "invalid", "The paging cursor is invalid or was modified",
                        ("_cursor",)) from None
    return tuple(values), resource_id, direction


def _bindable(value: object) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return True
    if isinstance(value, int):
        return value in _INTEGERS
    return isinstance(value, str) and len(value) <= _MAX_TEXT
