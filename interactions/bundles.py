"""Bundles built by splicing stored resource bytes between small serialised pieces (never re-serialising bodies)."""

from __future__ import annotations

import uuid
from typing import Any, Iterable

import orjson

from hearth.storage.base import Version
from hearth.storage.clock import to_instant, utc_now


def etag(version_id: int) -> str:
    return f'W/"{version_id}"'


def parse_etag(value: str | None) -> int | None:
    """`W/"3"` or `"3"` -> 3; anything else (no version id has more than 18 digits) -> None."""
    if not value:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def full_url(base_url: str, version: Version) -> str:
    return f"{base_url}/{version.type}/{version.id}"


def entry(url: str | None, resource: bytes | None, **fields: Any) -> bytes:
    """One Bundle.entry: `fullUrl`, the stored `resource` bytes spliced in, then the other `fields`."""
    parts = []
    if url is not None:
        parts.append(b'"fullUrl":' + orjson.dumps(url))
    if resource is not None:
        parts.append(b'"resource":' + resource)
    if fields:
        parts.append(orjson.dumps(fields)[1:-1])
    return b"{" + b",".join(parts) + b"}"


def bundle(bundle_type: str, entries: Iterable[bytes], total: int | None = None,
           links: Iterable[tuple[str, str]] = ()) -> bytes:
    """A Bundle of `bundle_type` holding the pre-serialised `entries`."""
    head: dict[str, Any] = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                            "meta": {"lastUpdated": to_instant(utc_now())}, "type": bundle_type}
    if total is not None:
        head["total"] = total
    link_list = [{"relation": relation, "url": url} for relation, url in links]
    if link_list:
        head["link"] = link_list
    entry_bytes = b",".join(entries)
    if not entry_bytes:  # FHIR JSON has no empty arrays
        return orjson.dumps(head)
    return orjson.dumps(head)[:-1] + b',"entry":[' + entry_bytes + b"]}"


def response_fields(version: Version, status: str) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": status, "etag": etag(version.version_id),
                              "lastModified": to_instant(version.last_updated)}
    if not version.deleted:
        fields["location"] = f"{version.type}/{version.id}/_history/{version.version_id}"
    return fields
