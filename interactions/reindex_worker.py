"""The re-index worker, one in every server process: every `interval` seconds (HEARTH_FOLLOW_INTERVAL) it makes the
parameters whose jobs are done searchable in this process, then works the open jobs (interactions/reindex_jobs.py)
whose lease it gets.

A job is held with a lease judged by the store's clock (storage/*/leases.py), renewed as pages are done. It pages
through each base type by keyset (in creation order: a resource created meanwhile comes after and is indexed too),
re-extracts each page (`Store.reindex`: a resource changed since keeps its newer entries) and saves its position
after every page, fenced by the lease, so that a former holder that lost it (paused, or its lease expired) cannot set
the progress back, and a job whose holder died is resumed from its last saved page: at once when the holder was a
process of this machine (storage/owners.py), else when its lease runs out (HEARTH_REINDEX_LEASE).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hearth.interactions import reindex_jobs
from hearth.interactions.context import Context
from hearth.interactions.definitions import reindex_versions
from hearth.interactions.periodic import every
from hearth.search.ir import Keyset, Query
from hearth.search.paging import following
from hearth.storage import leases
from hearth.storage.base import Lease, LeaseLost
from hearth.storage.owners import new_owner, take_lease

log = logging.getLogger("hearth.reindex")


class Reindexer:
    def __init__(self, ctx: Context, page: int, lease: float, interval: float) -> None:
        self.ctx, self.page, self.lease, self.interval = ctx, page, lease, interval
        self.owner = new_owner()
        self.jobs = reindex_jobs.records(ctx)
        self.leases = leases(ctx.store)
        self._step = asyncio.Lock()  # the loop's passes and a test's own never work one job together
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.leases.open()
        await self.jobs.open()
        self._task = asyncio.create_task(self.run(), name="hearth-reindex")

    async def stop(self) -> None:
        """Stop; the job being worked is given up (its lease released) for the next worker, this process's or not."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def run(self) -> None:
        # no pass at once: what was loaded at start-up is registered with its jobs' state already; after a failed
        # pass the next goes on from the saved positions
        await every(self.interval, self.step, log, "re-index worker: a pass failed")

    async def step(self) -> None:
        """One pass: learn which jobs are done, then work every open job whose lease this worker gets."""
        async with self._step:
            await self.learn()
            for job in await self.jobs.list(reindex_jobs.KIND):
                if job["state"] in reindex_jobs.OPEN and await self._work(job):
                    await self.learn()

    async def learn(self) -> None:
        """Make the parameters whose jobs are done searchable in this process."""
        waiting = self.ctx.registry.waiting()
        if not waiting:
            return
        jobs = await self.jobs.get_many(reindex_jobs.KIND, sorted(set(waiting.values())))
        for url, name in waiting.items():
            if jobs.get(name, {}).get("state") == "done" and self.ctx.registry.indexed(url, name):
                self.ctx.capability_statement = None  # it lists the searchable parameters

    async def _work(self, job: dict[str, Any]) -> bool:
        """Claim `job` and work it to its end; whether it ended here (False: held elsewhere, or lost)."""
        lease = await self._claim(f"{reindex_jobs.KIND}|{job['name']}")
        if lease is None:
            return False
        run = _Run(self, job, lease)
        try:
            # as its last holder left it (`job` was listed before the claim: another may have worked it since)
            job = run.job = await self.jobs.get(reindex_jobs.KIND, job["name"]) or job
            if job["state"] not in reindex_jobs.OPEN:
                return False
            await run.work()
            return True
        except LeaseLost:
            log.warning("re-index of %s: lease lost, left to its new holder", job["name"])
            return False
        except Exception as error:  # the job is tried again at the next pass, failed after ATTEMPTS errors
            log.exception("re-index of %s failed", job["name"])
            await run.failed(error)
            return job["state"] == "failed"
        finally:
            await self.leases.release(run.lease)

    async def _claim(self, name: str) -> Lease | None:
        return await take_lease(self.leases, name, self.owner, self.lease)


class _Run:
    """One claim of one job: its pages, each saved under the lease (renewed as it goes)."""

    def __init__(self, worker: Reindexer, job: dict[str, Any], lease: Lease) -> None:
        self.worker, self.ctx, self.job, self.lease = worker, worker.ctx, job, lease
        self.renewed = time.monotonic()
        resource_id, _, version = job["searchParameter"].removeprefix("SearchParameter/").partition("/_history/")
        self.resource_id, self.version_id = resource_id, int(version)

    async def work(self) -> None:
        job = self.job
        if not await self._current():
            await self._end("superseded")
            return
        job.update(state="running", owner=self.worker.owner, started=job["started"] or await self.worker.leases.now())
        await self._save()
        for entry in job["types"]:
            if not entry["finished"]:
                await self._type(entry)
                if not await self._current():
                    await self._end("superseded")
                    return
        await self._end("done")

    async def _type(self, entry: dict[str, Any]) -> None:
        """Index one base type from its saved position on, saving the position after every page."""
        store = self.ctx.store
        if entry["total"] is None:
            entry["total"] = (await store.search(Query(types=(entry["type"],), count=0, total="accurate"))).total
        after = Keyset(tuple(entry["after"])) if entry["after"] is not None else None
        query: Query | None = Query(types=(entry["type"],), count=self.worker.page, after=after)
        while query is not None:
            page = await store.search(query)
            await reindex_versions(self.ctx, page.matches)
            query = following(query, page)
            entry["done"] += len(page.matches)
            entry["after"] = list(page.last) if page.last is not None else entry["after"]
            entry["finished"] = query is None
            await self._save()

    async def _current(self) -> bool:
        """Whether the job's SearchParameter version is still the current one (else a newer job does the work)."""
        current = await self.ctx.store.read("SearchParameter", self.resource_id)
        return current is not None and not current.deleted and current.version_id == self.version_id

    async def _end(self, state: str) -> None:
        self.job.update(state=state, ended=await self.worker.leases.now())
        await self._save()

    async def failed(self, error: Exception) -> None:
        """Note the error; fail the job after ATTEMPTS of them (else it is tried again)."""
        self.job["failures"] += 1
        self.job["error"] = f"{type(error).__name__}: {error}"
        if self.job["failures"] >= reindex_jobs.ATTEMPTS:
            self.job.update(state="failed", ended=await self.worker.leases.now())
        try:
            await self._save()
        except Exception:  # the store is away: the job stays as last saved, and is tried again
            log.exception("re-index of %s: its error could not be saved", self.job["name"])

    async def _save(self) -> None:
        """Save the job under the lease (LeaseLost when it is no longer held), and renew the lease once a third of it
        has passed."""
        worker = self.worker
        await worker.jobs.put(reindex_jobs.KIND, self.job["name"], self.job, fence=self.lease)
        if time.monotonic() - self.renewed > worker.lease / 3:
            renewed = await worker.leases.acquire(self.lease.name, worker.owner, worker.lease)
            # lost since the save: taken by another, or expired and taken afresh here (then given up: another may
            # have worked meanwhile)
            if renewed is None or renewed.token != self.lease.token:
                if renewed is not None:
                    await worker.leases.release(renewed)
                raise LeaseLost(self.lease)
            self.lease, self.renewed = renewed, time.monotonic()
