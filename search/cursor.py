"""Opaque keyset paging cursors: the last row's sort values, its id and the paging direction.

A cursor is url-safe base64 (no padding) of a short MAC followed by compact JSON. The MAC makes any edit a
400 instead of a confusing page. Its default key is a constant, so it detects corruption and casual editing,
not a determined forger; that is enough, since a forged cursor only selects a page of a search the client
may run anyway. Pass `key` (a deployment secret) to make cursors unforgeable.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import orjson

from capability.outcome import FhirError

DIRECTIONS = ("next", "prev")
_DEFAULT_KEY = b"hearth-cursor-v1"
_MAC_BYTES = 8
_SCALARS = (str, int, float, bool, type(None))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(values: tuple, resource_id: str, direction: str, *, key: bytes = _DEFAULT_KEY) -> str:
    """The cursor after (or before) the row with these sort `values` and `resource_id`.

    `values` hold JSON scalars only (str, int, float, bool, None); anything else is a TypeError.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    if not all(isinstance(value, _SCALARS) for value in values):
        raise TypeError("cursor values must be str, int, float, bool or None")
    payload = orjson.dumps([list(values), resource_id, direction])
    return base64.urlsafe_b64encode(_mac(key, payload) + payload).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, *, key: bytes = _DEFAULT_KEY) -> tuple[tuple, str, str]:
    """(values, resource_id, direction) of a cursor made by encode_cursor; FhirError 400 if it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, _mac(key, payload)):
            raise ValueError("bad MAC")
        values, resource_id, direction = orjson.loads(payload)
        if not (isinstance(values, list) and all(isinstance(value, _SCALARS) for value in values)
                and isinstance(resource_id, str) and direction in DIRECTIONS):
            raise ValueError("bad shape")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise FhirError(400, "invalid", "The paging cursor is invalid or was modified",
                        ("_cursor",)) from None
    return tuple(values), resource_id, direction
