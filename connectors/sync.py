"""Storing what a connector brings, through the dispatcher as the caller `connector NAME` (so every resource is
validated, versioned, indexed, announced to Subscriptions and audited like any other write):

- a resource is localized (connectors/identity.py) and written at its local id (update-as-create) unless its
  digest says it is what this connector last wrote (`unchanged`, no request at all); a re-sync after a crash
  finds the content current and makes no new version either;
- a page's writes go in transactions of up to a hundred resources (connectors/writes.py: one dispatch, one
  commit, one AuditEvent per resource written as ever), several at once; a transaction refused for one of its
  resources (invalid, refused or in conflict: it is all or nothing, so nothing of it was written) is written
  again one resource at a time, so that exactly that one is settled as below; a store without transactions
  takes every write on its own;
- it is written only if Hearth's copy is still the version this connector last wrote (If-Match): otherwise it
  was changed in Hearth meanwhile and the connector's conflict policy decides (`upstream-wins`, `local-wins`,
  `newest-wins`, `manual`: a dead letter holding both versions), each decision logged;
- what Hearth refuses (invalid: 400/422; refused: 403) is not stored: it becomes a dead letter with the raw
  upstream JSON, the error and the upstream URL; a failure of Hearth itself (5xx) stops the pass, so the
  checkpoint does not move past it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Iterable

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.connectors.identity import Localizer, local_id
from hearth.connectors.state import ConnectorState
from hearth.connectors.writes import Changed, commit
from hearth.interactions.context import Context
from hearth.interactions.crud import equal_content
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Caller, Request
from hearth.security.grant import Grant
from hearth.storage.clock import parse_instant

log = logging.getLogger("hearth.connectors")
_WRITES_IN_FLIGHT = 64  # a page's single writes run together, so that the store commits them in groups
_TRANSACTION = 100  # resources a transaction holds at most: a page's run together, one planned while one commits


def connector_caller(name: str, types: Iterable[str]) -> Caller:
    """The connector as the dispatcher knows it: allowed to read and write its own types, nothing else."""
    scope = " ".join(f"system/{resource_type}.cruds" for resource_type in types)
    return Caller("connector", name, Grant(scope, client=f"connector/{name}"))


async def current(ctx: Context, caller: Caller, resource_type: str, resource_id: str) -> dict[str, Any] | None:
    """Hearth's current version of a resource, read as `caller` (None: none, or deleted)."""
    try:
        outcome = await dispatch(ctx, Request("read", caller, resource_type, resource_id))
    except FhirError as error:
        if error.status in (404, 410):
            return None
        raise
    assert outcome.version is not None
    return fhir_json.loads(outcome.version.body, trusted=True)


class StoreFailed(Exception):
    """Hearth could not store a resource for a reason of its own (a 5xx): the pass stops where it is."""


class Sink:
    def __init__(self, ctx: Context, state: ConnectorState, localizer: Localizer, conflict: str) -> None:
        self.ctx = ctx
        self.state = state
        self.localizer = localizer
        self.conflict = conflict
        self.caller = connector_caller(state.name, sorted(localizer.types))
        self.counts: Counter[str] = Counter()

    async def store(self, resources: list[dict[str, Any]]) -> None:
        """Store a page of upstream resources (of the connector's types; others are dropped unstored)."""
        wanted = [r for r in resources if isinstance(r, dict) and r.get("resourceType") in self.localizer.types]
        self.counts["fetched"] += len(resources)
        keys = [_key(r) for r in wanted]
        known = await self.state.synced(keys)
        gate = asyncio.Semaphore(_WRITES_IN_FLIGHT)
        synced: dict[str, dict[str, Any]] = {}
        latest = dict(zip(keys, wanted))  # a page naming a resource twice: its last (newest) version
        try:
            pending = [await self._prepared(key, resource, known.get(key)) for key, resource in latest.items()]
            writes = [write for write in pending if write is not None]
            await _all(self._part(writes[n:n + _TRANSACTION], synced, gate)
                       for n in range(0, len(writes), _TRANSACTION))
        finally:  # what was written is recorded, even when something else failed or the pass is cancelled
            await asyncio.shield(self.state.save_synced(synced))

    async def _prepared(self, key: str, resource: dict[str, Any], known: dict[str, Any] | None) -> _Pending | None:
        """What to write for one upstream resource (None: nothing, it is unchanged or kept as a dead letter)."""
        url = self.localizer.source(resource)
        if not isinstance(resource.get("id"), str):  # nothing to fetch again by: kept as a malformed one
            self.counts["rejected"] += 1
            await self._dead(key, "malformed", "the upstream resource has no id", url, resource)
            return None
        try:
            local = self.localizer.localized(resource)
        except (TypeError, ValueError, AttributeError, KeyError) as error:  # a shape no resource has
            self.counts["rejected"] += 1
            await self._dead(key, "malformed", f"not a FHIR resource's shape: {error}", url, resource)
            return None
        digest = _digest(local)
        if known is not None and known.get("digest") == digest:
            self.counts["unchanged"] += 1
            return None
        return _Pending(key, resource, local, digest, known.get("local") if known else None)

    async def _part(self, part: list[_Pending], synced: dict[str, dict[str, Any]], gate: asyncio.Semaphore) -> None:
        """Write part of a page as one transaction where the store has them, else (or when the transaction is
        refused: a resource in it is invalid or in conflict) one by one, so that exactly the resources at fault
        become dead letters or conflicts."""
        if len(part) > 1 and self.ctx.store.supports_transactions:
            resources = {_local_key(write.local): write.local for write in part}
            expected = {_local_key(w.local): w.expected for w in part if w.expected is not None}
            try:
                results = await commit(self.ctx, self.caller, resources, expected)
            except Changed:
                log.debug("connector %s: a transaction met a resource changed in Hearth: one by one", self.state.name)
            except FhirError as error:
                if error.status >= 500:
                    raise StoreFailed(error.diagnostics) from None
                log.debug("connector %s: a transaction was refused (%s): one by one", self.state.name,
                          error.diagnostics)
            else:
                versions = {f"{r.version.type}/{r.version.id}": r for r in results if r.version is not None}
                for write in part:
                    result = versions[_local_key(write.local)]
                    assert result.version is not None
                    self.counts["unchanged" if result.unchanged else "stored"] += 1
                    synced[write.key] = {"local": result.version.version_id, "digest": write.digest}
                return

        async def one(write: _Pending) -> None:
            async with gate:
                done = await self._single(write)
            if done is not None:
                synced[write.key] = done
        await _all(one(write) for write in part)

    async def _single(self, write: _Pending) -> dict[str, Any] | None:
        """Write one resource on its own; the sync record to keep for it (None: keep what there is)."""
        key, resource, local, digest = write.key, write.upstream, write.local, write.digest
        try:
            return await self._write(local, digest, write.expected)
        except _Conflict as conflict:
            if conflict.current is not None and equal_content(conflict.current, local):
                # what Hearth holds is what this connector would write (written before a crash kept its record)
                self.counts["unchanged"] += 1
                return {"local": int(conflict.current["meta"]["versionId"]), "digest": digest}
            return await self._resolve(key, resource, local, digest, conflict.current)
        except FhirError as error:
            if error.status >= 500 or error.status == 409:  # Hearth's trouble, or a race: the next pass retries
                raise StoreFailed(f"{local['resourceType']}/{local['id']}: {error.diagnostics}") from None
            reason = "refused" if error.status in (401, 403) else "invalid"
            self.counts["rejected"] += 1
            await self._dead(key, reason, f"{error.status}: {error.diagnostics}", self.localizer.source(resource),
                             resource)
            return None

    async def _write(self, local: dict[str, Any], digest: str, expected: int | None,
                     force: bool = False) -> dict[str, Any]:
        request = Request("update", self.caller, local["resourceType"], local["id"], body=local,
                          if_match=None if force else expected, keep_unchanged=True)
        try:
            outcome = await dispatch(self.ctx, request)
        except FhirError as error:
            if error.status == 412:
                raise _Conflict(await self._current(local["resourceType"], local["id"])) from None
            raise
        assert outcome.version is not None
        self.counts["unchanged" if outcome.unchanged else "stored"] += 1
        return {"local": outcome.version.version_id, "digest": digest}

    async def _current(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        return await current(self.ctx, self.caller, resource_type, resource_id)

    async def _resolve(self, key: str, upstream: dict[str, Any], local: dict[str, Any], digest: str,
                       current: dict[str, Any] | None) -> dict[str, Any] | None:
        """Changed upstream and in Hearth since the last sync: the conflict policy decides."""
        self.counts["conflicts"] += 1
        where = f"{local['resourceType']}/{local['id']}"
        policy = self.conflict
        if policy == "newest-wins":
            upstream_time, local_time = _updated(upstream), _updated(current or {})
            newer = current is None or local_time is None or (upstream_time is not None and upstream_time > local_time)
            policy = "upstream-wins" if newer else "local-wins"
        if policy == "upstream-wins":
            log.info("connector %s: conflict on %s: the upstream version replaces Hearth's (%s)",
                     self.state.name, where, self.conflict)
            return await self._write(local, digest, None, force=True)
        if policy == "local-wins":
            log.info("connector %s: conflict on %s: Hearth's version is kept (%s)", self.state.name, where,
                     self.conflict)
            version = int(((current or {}).get("meta") or {}).get("versionId", 0))
            return {"local": version, "digest": digest}
        log.info("connector %s: conflict on %s: kept aside for a person to decide (manual)", self.state.name, where)
        await self._dead(key, "conflict", f"{where} was changed in Hearth and upstream since the last sync",
                         self.localizer.source(upstream), upstream, local=current)
        return None

    async def _dead(self, key: str, reason: str, error: str, url: str, raw: Any,
                    local: dict[str, Any] | None = None) -> None:
        self.counts["dead_lettered"] += 1
        log.warning("connector %s: %s %s kept as a dead letter: %s", self.state.name, reason, key, error)
        masked = False
        if isinstance(raw, dict):  # a dead letter shows no more than Hearth would have stored
            shown = self.localizer.masked(raw)
            masked = shown != raw
            raw = shown
        await self.state.dead_letter(key, reason, error, url, _text(raw) if raw is not None else None,
                                     _text(local) if local is not None else None, masked)

    async def dead_line(self, url: str, text: str, error: str) -> None:
        """A line of an NDJSON file that is not one JSON resource: kept as a dead letter (it names no resource to
        fetch again)."""
        self.counts["fetched"] += 1
        self.counts["rejected"] += 1
        key = f"NDJSON/{hashlib.sha256((url + text).encode()).hexdigest()[:20]}"
        await self._dead(key, "malformed", f"malformed line: {error}", url, text)

    async def delete(self, resource_type: str, upstream_id: str, when: datetime | None = None) -> None:
        """The upstream deleted a resource (at `when`, if it says): so does Hearth, if this connector brought it
        and nobody changed it in Hearth since; if someone did, the conflict policy decides."""
        key = f"{resource_type}/{upstream_id}"
        known = (await self.state.synced([key])).get(key)
        if known is None:
            return
        resource_id = local_id(self.state.name, upstream_id)
        current = await self._current(resource_type, resource_id)
        if current is not None and int(current["meta"]["versionId"]) != known.get("local"):
            self.counts["conflicts"] += 1
            policy = self.conflict
            if policy == "newest-wins":
                local_time = _updated(current)
                policy = "upstream-wins" if when is None or local_time is None or when > local_time else "local-wins"
            where = f"{resource_type}/{resource_id}"
            if policy == "local-wins":
                log.info("connector %s: %s deleted upstream but changed in Hearth: kept (%s)", self.state.name,
                         where, self.conflict)
                await self.state.save_synced({key: {"local": int(current["meta"]["versionId"]), "digest": ""}})
                return
            if policy == "manual":
                log.info("connector %s: %s deleted upstream but changed in Hearth: kept aside (manual)",
                         self.state.name, where)
                await self._dead(key, "deleted-conflict", f"{where} was deleted upstream and changed in Hearth "
                                 "since the last sync", f"{self.localizer.base}/{key}", None, local=current)
                return
            log.info("connector %s: %s deleted upstream but changed in Hearth: deleted (%s)", self.state.name,
                     where, self.conflict)
        await self.remove(resource_type, upstream_id)

    async def remove(self, resource_type: str, upstream_id: str) -> None:
        """Delete the local copy of an upstream resource and forget its sync state."""
        key = f"{resource_type}/{upstream_id}"
        try:
            await dispatch(self.ctx, Request("delete", self.caller, resource_type,
                                             local_id(self.state.name, upstream_id)))
        except FhirError as error:
            if error.status >= 500:
                raise StoreFailed(f"{key}: {error.diagnostics}") from None
            raise
        await self.state.forget_synced(key)
        self.counts["deleted"] += 1

    async def force(self, resource: dict[str, Any], masked: bool = False) -> None:
        """Store an upstream resource whatever Hearth holds (a dead letter a person retries; `masked`: its masked
        elements were removed already, so it is marked as subsetted all the same)."""
        key = _key(resource)
        local = self.localizer.localized(resource, masked)
        digest = _digest(local)
        done = await self._write(local, digest, None, force=True)
        await self.state.save_synced({key: done})


@dataclass
class _Pending:
    """An upstream resource to write: its key (`Type/id` upstream), itself, its local form and the digest of it,
    and the local version this connector last wrote (None: none)."""

    key: str
    upstream: dict[str, Any]
    local: dict[str, Any]
    digest: str
    expected: int | None


async def _all(work: Iterable[Awaitable[None]]) -> None:
    """Run `work` together until every part has ended; then raise the first failure, if any."""
    outcomes = await asyncio.gather(*work, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _local_key(local: dict[str, Any]) -> str:
    return f"{local['resourceType']}/{local['id']}"


class _Conflict(Exception):
    def __init__(self, current: dict[str, Any] | None) -> None:
        self.current = current


def _key(resource: dict[str, Any]) -> str:
    """`Type/id` upstream; for a resource without an id, one made of its content (it names nothing to fetch)."""
    resource_id = resource.get("id")
    if isinstance(resource_id, str):
        return f"{resource['resourceType']}/{resource_id}"
    return f"{resource['resourceType']}/~{_digest(resource)[:20]}"


def _updated(resource: dict[str, Any]) -> datetime | None:
    try:
        return parse_instant(str((resource.get("meta") or {})["lastUpdated"]))
    except (KeyError, ValueError, TypeError):
        return None


def _digest(resource: dict[str, Any]) -> str:
    return hashlib.sha256(fhir_json.dumps(resource)).hexdigest()[:32]


def _text(resource: Any) -> str:
    """JSON text, decimals as the upstream wrote them (dead letters keep the raw resource)."""
    return resource if isinstance(resource, str) else fhir_json.dumps(resource).decode()
