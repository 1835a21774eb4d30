"""The export worker: claims jobs under a lease (so one worker of any process writes each), writes their files,
renews the lease as it goes, and removes expired jobs with their files.

A job interrupted by a stop is released and starts over on the next claim; one whose process died is released by
the next worker of its machine to look (storage/owners.py), or claimed again once its lease runs out. Each
claim writes its own folder (`JOB/ATTEMPT/`), so a former owner still writing after losing its lease cannot mix
its lines into the files of the next. Leases and expiry are judged by the store's clock (storage/*/leases.py), so
replicas on hosts whose clocks drift agree on them. A job claimed more than `attempts` times is failed, so nothing stays "in
progress" for ever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, Issue, operation_outcome
from hearth.capability.summary import subset
from hearth.interactions.context import Context
from hearth.interactions.export import deleted, files, selection
from hearth.interactions.export.config import ExportConfig
from hearth.interactions.export.jobs import job_caller, job_folder
from hearth.interactions.request import Request
from hearth.storage import leases
from hearth.storage.base import ExportJobs, Version
from hearth.storage.owners import is_gone, new_owner

log = logging.getLogger("hearth.export")


class Cancelled(Exception):
    """The job was cancelled (removed) or taken over while being written."""


class Worker:
    def __init__(self, ctx: Context, jobs: ExportJobs, config: ExportConfig) -> None:
        self.ctx, self.jobs, self.config = ctx, jobs, config
        self.owner = new_owner()
        self.clock = leases(ctx.store)  # its `now()`: the store's clock
        self.wake = asyncio.Event()  # set by a kick-off of this process
        self._running: set[asyncio.Task] = set()

    async def run(self) -> None:
        while True:
            try:
                await self._sweep()
                await self._release_dead()
                while len(self._running) < self.config.max_jobs:
                    job = await self.jobs.claim(self.owner, self.config.lease, await self.clock.now())
                    if job is None:
                        break
                    task = asyncio.create_task(self._run_job(job), name=f"hearth-export-{job['id']}")
                    self._running.add(task)
                    task.add_done_callback(self._done)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is away for a moment: look again at the next poll
                log.exception("export worker: looking for jobs failed")
            self.wake.clear()
            # not asyncio.wait_for: on 3.11 it loses a cancellation that arrives as the event is set
            waiter = asyncio.ensure_future(self.wake.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.config.poll)
            finally:
                waiter.cancel()

    def _done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self.wake.set()  # a place is free

    async def stop(self) -> None:
        """Stop writing; the jobs being written wait for the next worker (this process's or another's)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.jobs.release(self.owner)

    async def _sweep(self) -> None:
        for job_id in await self.jobs.expired(await self.clock.now()):
            await asyncio.to_thread(files.remove, self.config.directory / job_id)
            await self.jobs.remove(job_id)

    async def _release_dead(self) -> None:
        """Jobs whose worker died on this machine wait for nobody: released for the next claim at once."""
        for owner in await self.jobs.owners():
            if is_gone(owner):
                log.info("export worker %s is gone: its jobs are released", owner)
                await self.jobs.release(owner)

    # -- one job -----------------------------------------------------------------------------------------

    async def _run_job(self, job: dict[str, Any]) -> None:
        folder = job_folder(self.config.directory, job)
        try:
            if job["attempts"] > self.config.attempts:
                raise FhirError(500, "exception", f"interrupted {job['attempts'] - 1} times (restarts or crashes)")
            await asyncio.to_thread(files.prepare, folder)
            job.update(output=[], errors=[], deleted=[])
            await self._write(job, folder)
            job.update(state="completed", progress="completed")
        except Cancelled:
            await asyncio.to_thread(files.remove, folder)
            return
        except FhirError as error:
            job.update(state="failed", failure=error.diagnostics)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug: the job fails cleanly instead of staying in progress
            if await self.jobs.get(job["id"]) is None:  # cancelled while writing: its folder went under it
                await asyncio.to_thread(files.remove, folder)
                return
            log.exception("export %s failed", job["id"])
            job.update(state="failed", failure=f"internal error ({type(error).__name__})")
        if job["state"] == "failed":
            await asyncio.to_thread(files.remove, folder)
        job.update(lease_owner=None, lease_until=0, expires=await self.clock.now() + self.config.retention)
        if not await self.jobs.save(job, self.owner):
            await asyncio.to_thread(files.remove, folder)

    async def _write(self, job: dict[str, Any], folder: Any) -> None:
        plan = job["plan"]
        request = Request("operation", job_caller(job), operation="$export")
        errors = files.NdjsonFiles(folder, "errors", self.config.file_bytes)
        removed = files.NdjsonFiles(folder, "deleted", self.config.file_bytes)
        progress = Progress(self, job)
        try:
            for position, resource_type in enumerate(plan["types"]):
                progress.position = position
                elements = _elements_for(plan["elements"], resource_type)
                out = files.NdjsonFiles(folder, resource_type, self.config.file_bytes)
                try:
                    async for page in selection.versions(self.ctx, plan, resource_type, job["transaction_time"],
                                                         self.config.page):
                        lines = [line for line in (self._line(request, v, elements) for v in page) if line]
                        await asyncio.to_thread(out.write, lines)
                        await progress.add(len(lines))
                    if plan.get("since"):
                        async for ids in deleted.deletions(self.ctx, plan, resource_type, request,
                                                           job["transaction_time"], self.config.page):
                            line = deleted.bundle(resource_type, ids, job["transaction_time"])
                            await asyncio.to_thread(removed.write, [line])
                            await progress.add(0)
                except FhirError as error:  # e.g. a search past its deadline: this type's files are incomplete
                    issue = Issue("error", error.code, f"{resource_type}: {error.diagnostics}")
                    await asyncio.to_thread(errors.write, [fhir_json.dumps(operation_outcome([issue]))])
                finally:
                    await asyncio.to_thread(out.close)
                job["output"] += [{"type": resource_type, "name": name, "count": count}
                                  for name, count in out.written if count]
        finally:
            await asyncio.to_thread(errors.close)
            await asyncio.to_thread(removed.close)
        job["errors"] = [{"name": name, "count": count} for name, count in errors.written]
        job["deleted"] = [{"name": name, "count": count} for name, count in removed.written]
        await self.renew(job)

    async def renew(self, job: dict[str, Any]) -> None:
        job["lease_until"] = await self.clock.now() + self.config.lease
        if not await self.jobs.save(job, self.owner):
            raise Cancelled()

    def _line(self, request: Request, version: Version, elements: tuple[str, ...]) -> bytes | None:
        """The NDJSON line of a version: its stored bytes, unless the caller's mask or `_elements` change it."""
        shown = self.ctx.policy.after(request, version)
        if shown is None:
            return None
        body = shown.body
        if elements:
            return fhir_json.dumps(subset(fhir_json.loads(body, trusted=True), None, elements))
        if b"\n" in body:  # bodies are stored compact; one that is not must still be one line
            return fhir_json.dumps(fhir_json.loads(body, trusted=True))
        return body


class Progress:
    """A job's progress as it is written: counted, and saved with a renewed lease at least every second."""

    def __init__(self, worker: Worker, job: dict[str, Any]) -> None:
        self.worker, self.job = worker, job
        self.position = self.total = 0
        self.renewed = time.monotonic()

    async def add(self, written: int) -> None:
        self.total += written
        if time.monotonic() - self.renewed > min(1.0, self.worker.config.lease / 3):
            self.job["progress"] = f"{self.position}/{len(self.job['plan']['types'])} types, {self.total} resources"
            await self.worker.renew(self.job)
            self.renewed = time.monotonic()


def _elements_for(elements: list[str], resource_type: str) -> tuple[str, ...]:
    """The `_elements` that apply to a type: unqualified ones, and `Type.element` ones of the type."""
    chosen = []
    for element in elements:
        head, _, rest = element.partition(".")
        if not rest:
            chosen.append(head)
        elif head == resource_type:
            chosen.append(rest)
    return tuple(chosen)
