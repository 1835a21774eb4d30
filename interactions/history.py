"""history: of one resource, of a type, of the whole system (newest first, keyset-paged by change sequence)."""

from __future__ import annotations

import re
from datetime import datetime
from urllib.parse import urlencode

from hearth.capability.outcome import invalid, not_found
from hearth.search.normalize import date_range, whole_number
from hearth.interactions.bundles import bundle, entry, full_url, response_fields
from hearth.interactions.context import Context, released
from hearth.interactions.request import Request
from hearth.interactions.crud import check_id_known
from hearth.interactions.resources import check_type
from hearth.interactions.refusals import answered
from hearth.storage.base import Version
from hearth.storage.clock import from_text

_SEQ = re.compile(r"[0-9]{1,18}")  # a change sequence number from a next link (SQLite and MongoDB take 64 bits)


async def history(ctx: Context, request: Request, resource_type: str | None, resource_id: str | None,
                  params: list[tuple[str, str]]) -> bytes:
    """A `history` Bundle of what the policy lets `request`'s caller see; params: `_since`, `_at`, `_count`,
    `_cursor` (from a next link). Its total on the first page only (counting every version matched is a read of
    them all), and only for a caller who sees all of them."""
    if resource_type is not None:
        check_type(resource_type)
    if resource_id is not None:
        check_id_known(resource_id)
    values = dict(params)
    since = _instant(values, "_since", lower=True)
    at = _instant(values, "_at", lower=False)
    count = _count(ctx, values.get("_count"))
    cursor = values.get("_cursor")
    if cursor is not None and _SEQ.fullmatch(cursor) is None:
        raise invalid(f"Invalid _cursor '{cursor[:40]}'", ("_cursor",))
    before = int(cursor) if cursor is not None else None
    with answered():
        page = await ctx.store.history(resource_type, resource_id, since, before, count, at,
                                       total=before is None and ctx.policy.sees_all(request))
    if resource_id is not None and not page.entries:
        await _require_exists(ctx, resource_type, resource_id)
    path = "/".join(part for part in (resource_type, resource_id, "_history") if part)
    kept = [(name, value) for name, value in params if name in ("_since", "_at", "_count")]
    links = [("self", _url(ctx, path, kept + ([("_cursor", cursor)] if cursor else [])))]
    if len(page.entries) == count and page.entries:
        links.append(("next", _url(ctx, path, kept + [("_cursor", str(page.entries[-1][0]))])))
    shown = released(ctx, request, [version for _, version in page.entries])
    if resource_id is not None and page.entries and not shown:  # a resource the caller may not see: as if absent
        raise not_found(resource_type or "", resource_id)
    return bundle("history", (_entry(ctx, version) for version in shown), page.total, links)


async def _require_exists(ctx: Context, resource_type: str | None, resource_id: str) -> None:
    from hearth.capability.outcome import not_found
    if resource_type is not None and await ctx.store.read(resource_type, resource_id) is None:
        raise not_found(resource_type, resource_id)


def _entry(ctx: Context, version: Version) -> bytes:
    if version.deleted:
        method, url, status = "DELETE", f"{version.type}/{version.id}", "204 No Content"
    elif version.version_id == 1:
        method, url, status = "POST", version.type, "201 Created"
    else:
        method, url, status = "PUT", f"{version.type}/{version.id}", "200 OK"
    return entry(full_url(ctx.base_url, version), None if version.deleted else version.body,
                 request={"method": method, "url": url}, response=response_fields(version, status))


def _instant(values: dict[str, str], name: str, lower: bool) -> datetime | None:
    value = values.get(name)
    if value is None:
        return None
    try:
        lo, hi = date_range(value)
    except ValueError:
        raise invalid(f"Invalid {name} '{value[:40]}': expected a FHIR instant or date", (name,)) from None
    return from_text(lo if lower else hi)


def _count(ctx: Context, value: str | None) -> int:
    if value is None:
        return ctx.default_count
    try:
        count = whole_number(value, ctx.max_count)
    except ValueError:
        count = 0
    if count < 1:
        raise invalid(f"Invalid _count '{value[:40]}': expected a positive integer", ("_count",))
    return count


def _url(ctx: Context, path: str, params: list[tuple[str, str]]) -> str:
    query = urlencode(params)
    return f"{ctx.base_url}/{path}" + (f"?{query}" if query else "")
