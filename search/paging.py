"""Keyset paging: where the pages before and after a page start, and the opaque cursors that carry those places.

A backend reads a page after (or before) a `Keyset` (search/ir.py), the key values of one row in the search's
order, and gives back the key values of the page's first and last rows and whether more rows lie beyond it in
the direction it read (storage/base.py SearchPage). From those, `places` says where the next and previous pages
start; this module alone turns a place into a cursor and back, so storage never sees one.

A cursor is url-safe base64 (no padding) of a short MAC followed by compact JSON: [search, values, direction].
`search` names the search it belongs to (a digest of its scope, types, the parameters that choose and order the
matches): a cursor of another search is refused (400) on every backend, not read as a place in this one. The
MAC, keyed by a random secret each database keeps (made when its store first opens it), makes any edit or
forgery a 400 instead of a confusing page, and lets a cursor stay valid across restarts and across the Hearth
processes of one database. A cursor's values must also be ones every backend can bind, even one the MAC accepts
(a key may leak): integers within 64 bits, strings no longer than a URL can carry, no more values than a sort can
have.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import replace
from typing import Protocol

import orjson

from hearth.capability.outcome import FhirError
from hearth.search.ir import Keyset, Query

DIRECTIONS = ("next", "prev")
_MAC_BYTES = 8
_SCALARS = (str, int, float, bool, type(None))
_MAX_VALUES = 100  # sort values in one cursor (a sort has one per distinct parameter, and few parameters sort)
_MAX_TEXT = 65_536  # characters of one string value: more than any URL a server takes
_INTEGERS = range(-2 ** 63, 2 ** 63)  # what SQLite and MongoDB store
# parameters that shape a page but do not choose or order the matches: a cursor stays valid when they change
_PAGE_SHAPE = frozenset({"_count", "_cursor", "_include", "_revinclude", "_total", "_summary", "_elements",
                         "_sort", "_format", "_pretty"})


class Page(Protocol):
    """What paging needs of a backend's page (storage/base.py SearchPage)."""

    first: tuple | None
    last: tuple | None
    more: bool


def identity(query: Query, scope: str = "") -> str:
    """The name of the search `query` is a page of: its `scope` (e.g. the compartment), its types, sort and the
    parameters applied that choose the matches (as the client wrote them: a parsed `ap` date moves with the clock,
    and an expanded ValueSet with its definition)."""
    chosen = sorted((name, value) for name, value in query.used if name.partition(":")[0] not in _PAGE_SHAPE)
    sort = [[key.param, key.descending] for key in query.sort]
    return hashlib.sha256(orjson.dumps([scope, list(query.types), chosen, sort])).hexdigest()[:16]


def places(query: Query, page: Page) -> tuple[Keyset | None, Keyset | None]:
    """Where the next and the previous pages start (None: there is no such page)."""
    if page.first is None or page.last is None:
        return None, None
    backwards = query.after is not None and query.after.direction == "prev"
    # reading backwards, the rows we came from follow; reading forwards, a place to start from means rows precede
    following = Keyset(page.last, "next") if page.more or backwards else None
    preceding = Keyset(page.first, "prev") if (page.more if backwards else query.after is not None) else None
    return following, preceding


def following(query: Query, page: Page) -> Query | None:
    """The query of the page after `page` (None: it was the last), for paging through a whole search in-process."""
    place = places(query, page)[0]
    return None if place is None else replace(query, after=place)


def opened(query: Query, key: bytes, scope: str = "") -> Query:
    """`query` with its `_cursor` read into the place its page starts (`after`); FhirError 400 when the cursor is
    not one this database signed for this search."""
    if query.cursor is None:
        return query
    return replace(query, after=decode(query.cursor, identity(query, scope), key=key))


def cursors(query: Query, page: Page, key: bytes, scope: str = "") -> tuple[str | None, str | None]:
    """The cursors of the next and the previous pages (None: no such page)."""
    search = identity(query, scope)
    return tuple(None if place is None else encode(place, search, key=key)  # type: ignore[return-value]
                 for place in places(query, page))


def encode(place: Keyset, search: str, *, key: bytes) -> str:
    """The cursor of `place` in the search named `search`; its values hold JSON scalars only (else TypeError)."""
    if place.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")
    if not all(isinstance(value, _SCALARS) for value in place.values):
        raise TypeError("cursor values must be str, int, float, bool or None")
    payload = orjson.dumps([search, list(place.values), place.direction])
    return base64.urlsafe_b64encode(_mac(key, payload) + payload).rstrip(b"=").decode("ascii")


def decode(cursor: str, search: str, *, key: bytes) -> Keyset:
    """The place a cursor made by `encode` with `key` holds; FhirError 400 if it is not one, holds a value no
    backend could bind, or belongs to another search than `search`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, _mac(key, payload)):
            raise ValueError("bad MAC")
        named, values, direction = orjson.loads(payload)
        if not (isinstance(values, list) and len(values) <= _MAX_VALUES and all(map(_bindable, values))
                and isinstance(named, str) and direction in DIRECTIONS):
            raise ValueError("bad shape")
    except (ValueError, TypeError, binascii.Error, orjson.JSONDecodeError):
        raise FhirError(400, "invalid", "The paging cursor is invalid or was modified", ("_cursor",)) from None
    if named != search:
        raise not_this_search()
    return Keyset(tuple(values), direction)


def not_this_search() -> FhirError:
    """The refusal of a cursor made for another search."""
    return FhirError(400, "invalid", "The paging cursor does not belong to this search", ("_cursor",))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def _bindable(value: object) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return True
    if isinstance(value, int):
        return value in _INTEGERS
    return isinstance(value, str) and len(value) <= _MAX_TEXT
