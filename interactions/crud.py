"""create, read, vread, update and delete."""

from __future__ import annotations

from typing import Any, Sequence

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, gone, invalid, not_found
from hearth.interactions.context import Context
from hearth.interactions.request import Caller
from hearth.interactions.resources import (check_id, check_type, index_entries, new_id, off_loop, parse_body,
                                           serialise, stamp)
from hearth.storage.base import Assertion, Version, VersionConflict, Write
from hearth.storage.clock import utc_now

_RETRIES = 20  # an unconditional update racing other writers re-reads and tries again


async def create(ctx: Context, caller: Caller, resource_type: str, body: bytes | dict[str, Any],
                 large: bool = False) -> Version:
    """Create with a server-assigned id (any client id in the body is ignored, per R4).

    `large`: a parsed body came from a large Bundle or file, so its work goes to a worker thread (bytes tell by
    their own size); likewise for the other writes."""
    check_type(resource_type)
    resource, large = await parse_body(ctx, body, resource_type, large)
    return await write_new(ctx, caller, resource_type, new_id(), resource, previous=0, large=large)


async def write_new(ctx: Context, caller: Caller, resource_type: str, resource_id: str, resource: dict[str, Any],
                    previous: int, assertions: Sequence[Assertion] = (), large: bool = False) -> Version:
    """Commit the version after `previous` (0: the first) of a parsed and validated resource,
    provided the `assertions` still hold inside the commit (stamped, serialised and indexed off the loop if `large`)."""
    write = await off_loop(large, version_write, ctx, caller, resource_type, resource_id, resource, previous)
    await ctx.commit([write], assertions, caller)
    return written(write)


def version_write(ctx: Context, caller: Caller, resource_type: str, resource_id: str, resource: dict[str, Any],
                  previous: int) -> Write:
    """The Write of the version after `previous` (0: the first), as `caller` writes it: through the write hooks,
    stamped, serialised and indexed."""
    resource = ctx.prepare(caller, resource_type, resource, previous)
    now = utc_now()
    version_id = previous + 1
    stamped = stamp(resource, resource_id, version_id, now)
    interaction = "create" if previous == 0 else "update"
    return Write(resource_type, resource_id, version_id, now, serialise(stamped), index_entries(ctx, stamped),
                 previous, interaction)


def tombstone_write(current: Version) -> Write:
    """The Write deleting `current` (a live version)."""
    return Write(current.type, current.id, current.version_id + 1, utc_now(), None, (), current.version_id,
                 "delete")


def written(write: Write) -> Version:
    """The Version a committed `write` created."""
    return Version(write.type, write.id, write.version_id, write.last_updated, write.body is None, write.body or b"")


async def read(ctx: Context, resource_type: str, resource_id: str) -> Version:
    check_type(resource_type)
    check_id_known(resource_id)
    version = await ctx.store.read(resource_type, resource_id)
    if version is None:
        raise not_found(resource_type, resource_id)
    if version.deleted:
        raise gone(resource_type, resource_id, version.version_id)
    return version


async def vread(ctx: Context, resource_type: str, resource_id: str, version_id: str) -> Version:
    check_type(resource_type)
    check_id_known(resource_id)
    if not version_id.isdigit() or len(version_id) > 18:  # past 64-bit: no such version
        raise not_found(resource_type, f"{resource_id}/_history/{version_id}")
    version = await ctx.store.vread(resource_type, resource_id, int(version_id))
    if version is None:
        raise not_found(resource_type, f"{resource_id}/_history/{version_id}")
    if version.deleted:
        raise gone(resource_type, resource_id, version.version_id)
    return version


def check_id_known(resource_id: str) -> None:
    """An id that could never have been assigned is simply not found (R4: 404, not 400)."""
    try:
        check_id(resource_id)
    except FhirError:
        raise FhirError(404, "not-found", f"No resource has the id '{resource_id}'") from None


async def update(ctx: Context, caller: Caller, resource_type: str, resource_id: str, body: bytes | dict[str, Any],
                 if_match: int | None = None, large: bool = False,
                 keep_unchanged: bool = False) -> tuple[Version, bool, bool]:
    """Update (or create at a client-chosen id). Returns the new version, whether it was created, and whether it
    was not written: with `keep_unchanged`, content equal to the current version's (meta.versionId and
    meta.lastUpdated aside) leaves that version current. `large` as for create."""
    check_type(resource_type)
    check_id(resource_id)
    resource, large = await parse_body(ctx, body, resource_type, large)
    body_id = resource.get("id")
    if body_id is None:
        raise invalid("The resource must carry its id for an update", (f"{resource_type}.id",))
    if body_id != resource_id:
        raise invalid(f"The id in the body ('{body_id}') differs from the id in the URL ('{resource_id}')",
                      (f"{resource_type}.id",))
    for _ in range(_RETRIES):
        current = await ctx.store.read(resource_type, resource_id)
        previous = current.version_id if current else 0
        if if_match is not None and (current is None or current.deleted or previous != if_match):
            raise version_mismatch(resource_type, resource_id, if_match, current)
        if keep_unchanged and current is not None and not current.deleted and same_content(current, resource):
            return current, False, True
        try:
            version = await write_new(ctx, caller, resource_type, resource_id, resource, previous, large=large)
        except VersionConflict as conflict:
            if if_match is not None:
                raise version_mismatch(resource_type, resource_id, if_match, None, conflict.actual) from None
            continue
        return version, current is None or current.deleted, False
    raise FhirError(409, "conflict", f"{resource_type}/{resource_id} is being updated concurrently; try again")


def same_content(current: Version, resource: dict[str, Any]) -> bool:
    """Whether `resource` says what the stored version says, the server's meta.versionId and lastUpdated aside."""
    return equal_content(fhir_json.loads(current.body, trusted=True), resource)


def equal_content(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether two resources say the same, their meta.versionId and lastUpdated aside."""
    return _content(one) == _content(other)


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {key: value for key, value in (resource.get("meta") or {}).items()
            if key not in ("versionId", "lastUpdated")}
    content = {key: value for key, value in resource.items() if key != "meta"}
    if meta:
        content["meta"] = meta
    return content


def version_mismatch(resource_type: str, resource_id: str, expected: int, current: Version | None,
                     actual: int | None = None) -> FhirError:
    found = actual if actual is not None else (current.version_id if current and not current.deleted else None)
    state = f"version {found}" if found else "no current version"
    return FhirError(412, "conflict", f"If-Match expected version {expected} of {resource_type}/{resource_id}, "
                                      f"but it has {state}")


async def delete(ctx: Context, caller: Caller, resource_type: str, resource_id: str) -> Version | None:
    """Delete (tombstone). Returns the tombstone, or None when there was nothing current to delete."""
    check_type(resource_type)
    check_id_known(resource_id)
    for _ in range(_RETRIES):
        current = await ctx.store.read(resource_type, resource_id)
        if current is None or current.deleted:
            return None
        tombstone = tombstone_write(current)
        try:
            await ctx.commit([tombstone], (), caller)
        except VersionConflict:
            continue
        return written(tombstone)
    raise FhirError(409, "conflict", f"{resource_type}/{resource_id} is being updated concurrently; try again")
