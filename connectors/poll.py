"""`fhir-poll`: one pass brings what changed upstream since the checkpoint, type by type.

- By search where the upstream supports it: `Type?_lastUpdated=gt<checkpoint>&_sort=_lastUpdated`, following the
  upstream's own `next` links as given (opaque), the next page fetched while this one is stored. Sorted pages
  let the checkpoint move after each page, to just below the page's last `lastUpdated` (resources sharing that
  instant may continue on the next page: they are fetched again, found unchanged, and cost no write); at the
  end of the search, to just below the newest instant seen, for the same reason.
- Else (the search refuses `_lastUpdated` or `_sort` with a 400) by history, `Type/_history?_since=<checkpoint>`,
  newest first: only the newest version of each resource is stored (or deleted); the checkpoint moves at the
  end of the pass.
- Deletions, in search mode, from the same history where the upstream offers it (DELETE entries only).
The checkpoint never moves past a resource that is not stored (or kept as a dead letter): a crash at any point
loses nothing, and what is fetched again is found unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from hearth.connectors.config import ConnectorConfig
from hearth.connectors.state import ConnectorState
from hearth.connectors.sync import Sink
from hearth.connectors.upstream import Upstream, UpstreamError
from hearth.storage.clock import parse_instant, to_instant, utc_now

log = logging.getLogger("hearth.connectors")
_CLOCK_SKEW = timedelta(seconds=60)  # when the upstream says no time of its own, ours less this


class Poller:
    def __init__(self, config: ConnectorConfig, upstream: Upstream, sink: Sink, state: ConnectorState) -> None:
        self.config = config
        self.upstream = upstream
        self.sink = sink
        self.state = state
        self.by_history: set[str] = set()  # types whose search cannot be incremental: synced by history
        self.no_history: set[str] = set()  # types whose upstream keeps no history: deletions unseen
        self.checkpoint: dict[str, Any] = {}

    async def run_pass(self) -> None:
        self.checkpoint = await self.state.checkpoint()
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(resource_type: str) -> None:
            async with gate:
                await self.sync_type(resource_type)

        tasks = [asyncio.ensure_future(one(resource_type)) for resource_type in self.config.types]
        try:
            await asyncio.gather(*tasks)
        except BaseException:  # one type failed: the others stop too, so nothing is stored after the pass ends
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def sync_type(self, resource_type: str) -> None:
        since = self._since("types", resource_type)
        if resource_type not in self.by_history:
            try:
                await self._search(resource_type, since)
                await self._deletions(resource_type)
                return
            except _NotIncremental as refused:
                log.warning("connector %s: %s?_lastUpdated&_sort=_lastUpdated refused (%s): syncing by history",
                            self.config.name, resource_type, refused)
                self.by_history.add(resource_type)
        await self._history(resource_type, since, deletions_only=False)

    # -- by search --------------------------------------------------------------------------------------------

    async def _search(self, resource_type: str, since: datetime | None) -> None:
        params = {"_sort": "_lastUpdated", "_count": str(self.config.page_size)}
        if since is not None:
            params["_lastUpdated"] = f"gt{to_instant(since)}"
        try:
            page = await self.upstream.get_json(resource_type, params)
        except UpstreamError as error:
            if error.status == 400:
                raise _NotIncremental(str(error)) from None
            raise
        deletes = self.checkpoint.setdefault("deletes", {})
        if resource_type not in deletes:  # the first pass: what was deleted before it was never fetched
            deletes[resource_type] = to_instant(_bundle_time(page))
        ordered, last = True, None
        newest: datetime | None = None  # the newest instant seen, and the newest one before it
        before_newest: datetime | None = None
        while page is not None:
            resources, following = _matches(page, resource_type), _next(page)
            prefetch = asyncio.ensure_future(self.upstream.get_json(following)) if following else None
            try:
                await self.sink.store(resources)
            except BaseException:
                if prefetch is not None:
                    prefetch.cancel()
                raise
            times = [t for t in (_updated(r) for r in resources) if t is not None]
            ordered = ordered and times == sorted(times) and (last is None or not times or times[0] >= last)
            if times:
                last = times[-1]
            for moment in times:
                if newest is None or moment > newest:
                    before_newest, newest = newest, moment
                elif moment < newest and (before_newest is None or moment > before_newest):
                    before_newest = moment
            if ordered and prefetch is not None and times:
                below = [t for t in times if t < times[-1]]
                if below:
                    await self._advance("types", resource_type, max(below))
            page = await prefetch if prefetch is not None else None
        # not the newest instant itself: a write landing after this search with the same instant (second-precision
        # upstreams) would never match `gt` it; what shares it is fetched again next time and found unchanged
        if before_newest is not None:
            await self._advance("types", resource_type, before_newest)

    async def _deletions(self, resource_type: str) -> None:
        if resource_type in self.no_history:
            return
        since = self._since("deletes", resource_type)
        try:
            await self._history(resource_type, since, deletions_only=True)
        except UpstreamError as error:
            if error.status not in (400, 404, 405, 501):
                raise
            log.info("connector %s: no %s history upstream (%s): deletions there are not seen",
                     self.config.name, resource_type, error.status)
            self.no_history.add(resource_type)

    # -- by history -------------------------------------------------------------------------------------------

    async def _history(self, resource_type: str, since: datetime | None, deletions_only: bool) -> None:
        params = {"_count": str(self.config.page_size)}
        if since is not None:
            params["_since"] = to_instant(since)
        page: Any = await self.upstream.get_json(f"{resource_type}/_history", params)
        newest_seen: set[str] = set()  # newest first: an id seen again is an older version
        high = since
        while page is not None:
            following = _next(page)
            stored, deleted = [], []
            for entry in page.get("entry") or []:
                resource_id, method, moment = _history_entry(entry, resource_type)
                if resource_id is None or resource_id in newest_seen:
                    continue
                newest_seen.add(resource_id)
                if moment is not None:
                    high = max(high, moment) if high else moment
                if method == "DELETE":
                    deleted.append((resource_id, moment))
                elif not deletions_only and isinstance(entry.get("resource"), dict):
                    stored.append(entry["resource"])
            await self.sink.store(stored)
            for resource_id, moment in deleted:
                await self.sink.delete(resource_type, resource_id, moment)
            page = await self.upstream.get_json(following) if following else None
        if high is not None:
            await self._advance("deletes" if deletions_only else "types", resource_type, high)

    # -- checkpoint -------------------------------------------------------------------------------------------

    def _since(self, part: str, resource_type: str) -> datetime | None:
        value = self.checkpoint.get(part, {}).get(resource_type)
        return parse_instant(value) if value else self.config.since

    async def _advance(self, part: str, resource_type: str, moment: datetime) -> None:
        current = self._since(part, resource_type)
        if current is None or moment > current:
            self.checkpoint.setdefault(part, {})[resource_type] = to_instant(moment)
            await self.state.save_checkpoint(self.checkpoint)


class _NotIncremental(Exception):
    """The upstream's search cannot select by `_lastUpdated` sorted by it."""


def _matches(bundle: Any, resource_type: str) -> list[dict[str, Any]]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UpstreamError("the upstream answered a search with something other than a Bundle")
    return [entry["resource"] for entry in bundle.get("entry") or []
            if isinstance(entry, dict) and isinstance(entry.get("resource"), dict)
            and (entry.get("search") or {}).get("mode", "match") == "match"
            and entry["resource"].get("resourceType") == resource_type]


def _next(bundle: Any) -> str | None:
    for link in bundle.get("link") or [] if isinstance(bundle, dict) else []:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def _updated(resource: dict[str, Any]) -> datetime | None:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    try:
        return parse_instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _bundle_time(bundle: Any) -> datetime:
    """When the upstream answered, by its clock where it says (Bundle.meta.lastUpdated), else ours less skew."""
    if isinstance(bundle, dict):
        moment = _updated(bundle)
        if moment is not None:
            return moment
    return utc_now() - _CLOCK_SKEW


def _history_entry(entry: Any, resource_type: str) -> tuple[str | None, str, datetime | None]:
    """(id, method, when) of one history entry of `resource_type` (id None: not one)."""
    if not isinstance(entry, dict):
        return None, "", None
    request = entry.get("request") or {}
    method = str(request.get("method", "PUT")).upper()
    resource = entry.get("resource")
    if isinstance(resource, dict):
        if resource.get("resourceType") != resource_type or not isinstance(resource.get("id"), str):
            return None, method, None
        return resource["id"], method, _updated(resource)
    url = str(request.get("url") or entry.get("fullUrl") or "")
    parts = url.split("?")[0].rstrip("/").split("/")
    if resource_type not in parts or parts.index(resource_type) + 1 >= len(parts):
        return None, method, None
    resource_id = parts[parts.index(resource_type) + 1]
    when = (entry.get("response") or {}).get("lastModified")
    try:
        moment = parse_instant(when) if isinstance(when, str) else None
    except ValueError:
        moment = None
    return resource_id, method, moment
