"""The MongoDB document shapes: current resources with their index entries, history versions, change rows.

A current resource document holds its index entries as one typed array per entry shape (field names kept
short, None values left out), queried with `$elemMatch` on compound multikey indexes (storage/mongo/store.py):

    tok  [{p, s, c, t, ts, tc}]        token: system ("" kept as none), code, text, identifier type
    str  [{p, n, e}]                   string: normalised, exact
    dt   [{p, lo, hi}]                 date: implicit range, normalised UTC instants
    num  [{p, v, lo, hi}]              number: value and its precision range
    qty  [{p, v, lo, hi, s, c, u}]     quantity: plus system, code, unit
    ref  [{p, t, i, r, u, v, is, iv}]  reference: type, id, "Type/id", url/canonical, version, identifier
    uri  [{p, v}]
    comp [{p, c0, c1, ...}]            composite: component i as a sub-document of its own shape

plus `sort: {param: {min, max}}`, the smallest and largest sort value of each parameter (FHIR sorts
ascending by a resource's lowest value and descending by its highest).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import bson

from hearth.search.entries import (CompositeEntry, DateEntry, Entry, NumberEntry, QuantityEntry, ReferenceEntry,
                            StringEntry, TokenEntry, UriEntry)
from hearth.storage import clock
from hearth.storage.base import Change, Version, Write, WriteTooLarge

# entry shape -> (array field, fields of the stored sub-document)
_SHAPES: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    TokenEntry: ("tok", lambda e: {"s": e.system or None, "c": e.code, "t": e.text, "ts": e.type_system,
                                   "tc": e.type_code}),
    StringEntry: ("str", lambda e: {"n": e.norm, "e": e.exact}),
    DateEntry: ("dt", lambda e: {"lo": e.lo, "hi": e.hi}),
    NumberEntry: ("num", lambda e: {"v": e.value, "lo": e.lo, "hi": e.hi}),
    QuantityEntry: ("qty", lambda e: {"v": e.value, "lo": e.lo, "hi": e.hi, "s": e.system, "c": e.code,
                                      "u": e.unit}),
    ReferenceEntry: ("ref", lambda e: {"t": e.target_type, "i": e.target_id, "r": reference_key(e), "u": e.url,
                                       "v": e.version, "is": e.identifier_system, "iv": e.identifier_value}),
    UriEntry: ("uri", lambda e: {"v": e.value}),
    CompositeEntry: ("comp", lambda e: {f"c{n}": _fields(c) for n, c in enumerate(e.components)}),
}

ARRAYS = tuple(field for field, _ in _SHAPES.values())

# param type -> the array its entries live in (for :missing, includes and sorting)
ARRAY_OF_TYPE = {"token": "tok", "string": "str", "date": "dt", "number": "num", "quantity": "qty",
                 "reference": "ref", "uri": "uri", "composite": "comp"}

VERSION_FIELDS = {"_id": 0, "type": 1, "id": 1, "version_id": 1, "last_updated": 1, "deleted": 1, "body": 1}


def reference_key(entry: ReferenceEntry) -> str | None:
    """"Type/id" of a local reference (not an absolute URL), the key chains, _has and includes join on."""
    if entry.url is None and entry.target_type and entry.target_id:
        return f"{entry.target_type}/{entry.target_id}"
    return None


def _fields(entry: Entry) -> dict[str, Any]:
    return {k: v for k, v in _SHAPES[type(entry)][1](entry).items() if v is not None}


def _sort_value(entry: Entry) -> tuple[Any, Any] | None:
    """(low, high) sort value of one entry, None when it has none."""
    match entry:
        case TokenEntry(code=code):
            return (code, code) if code is not None else None
        case StringEntry(norm=norm):
            return norm, norm
        case DateEntry(lo=lo, hi=hi):
            return lo, hi
        case NumberEntry(value=value) | QuantityEntry(value=value):
            return value, value
        case ReferenceEntry():
            key = reference_key(entry) or entry.url or entry.target_id
            return (key, key) if key is not None else None
        case UriEntry(value=value):
            return value, value
    return None  # composites are not sortable


def index_fields(entries: Iterable[Entry]) -> dict[str, Any]:
    """The typed arrays and sort values of a resource's entries (empty arrays left out)."""
    arrays: dict[str, list[dict[str, Any]]] = {}
    sort: dict[str, dict[str, Any]] = {}
    for entry in entries:
        array = _SHAPES[type(entry)][0]
        arrays.setdefault(array, []).append({"p": entry.param, **_fields(entry)})
        value = _sort_value(entry)
        if value is None:
            continue
        low, high = value
        known = sort.get(entry.param)
        if known is None:
            sort[entry.param] = {"min": low, "max": high}
        else:
            known["min"], known["max"] = min(known["min"], low), max(known["max"], high)
    fields: dict[str, Any] = dict(arrays)
    if sort:
        fields["sort"] = sort
    return fields


INDEX_FIELDS = tuple(array for array, _ in _SHAPES.values()) + ("sort",)


def resource_key(resource_type: str, resource_id: str) -> str:
    return f"{resource_type}/{resource_id}"


def current_document(write: Write) -> dict[str, Any]:
    """The `resources` document for a write: a tombstone keeps no body and no index entries."""
    deleted = write.body is None
    document = {"_id": resource_key(write.type, write.id), "type": write.type, "id": write.id,
                "version_id": write.version_id, "last_updated": clock.to_text(write.last_updated),
                "deleted": deleted, "body": write.body or b""}
    if not deleted:
        document.update(index_fields(write.entries))
    return document


MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's BSON document limit


def check_size(write: Write, document: dict[str, Any]) -> None:
    """Raise WriteTooLarge when `document` (the write's current document, its largest) exceeds MAX_DOCUMENT_BYTES;
    encoded to measure only when its body is over 1/64 of the limit (below, body and entries cannot reach it)."""
    if len(document["body"]) * 64 < MAX_DOCUMENT_BYTES:
        return
    size = len(bson.encode(document))
    if size > MAX_DOCUMENT_BYTES:
        raise WriteTooLarge(write.type, write.id, size, MAX_DOCUMENT_BYTES)


# the `seq` of a version (and the `created` of a resource) committed but not yet numbered by the change log's
# sequencer (storage/mongo/sequencer.py): above every real number, so such versions come first in a history (newest
# first) and such resources last in creation order, where they belong; 18 digits, as a history `_cursor` holds
PENDING = 10**18 - 1


def history_key(resource_type: str, resource_id: str, version_id: int) -> str:
    return f"{resource_type}/{resource_id}/{version_id}"


def history_document(write: Write, seq: int) -> dict[str, Any]:
    """A version's `history` document; `seq` PENDING until the sequencer numbers it. It carries what its change-log
    row holds, so that the sequencer makes the row from it alone (`change_document`)."""
    return {"_id": history_key(write.type, write.id, write.version_id), "type": write.type, "id": write.id,
            "version_id": write.version_id, "seq": seq, "interaction": write.interaction,
            "last_updated": clock.to_text(write.last_updated), "deleted": write.body is None, "body": write.body or b""}


_CHANGE_FIELDS = ("type", "id", "version_id", "interaction", "last_updated")


def change_document(history: dict[str, Any], seq: int) -> dict[str, Any]:
    """The change-log row numbered `seq` of the version whose `history` document (its body left out or not) is
    given."""
    return {"_id": seq, **{name: history[name] for name in _CHANGE_FIELDS}}


def to_version(document: dict[str, Any]) -> Version:
    return Version(document["type"], document["id"], document["version_id"],
                   clock.from_text(document["last_updated"]), document["deleted"], bytes(document["body"]))


def to_change(document: dict[str, Any]) -> Change:
    return Change(document["_id"], document["type"], document["id"], document["version_id"],
                  document["interaction"], clock.from_text(document["last_updated"]))
