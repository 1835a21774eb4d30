"""The export worker: claims jobs under a lease (so one worker of any process writes each), writes their files,
renews the lease as it goes, and removes expired jobs with their files.

A job interrupted by a stop is released and starts over on the next claim (its folder emptied first); one whose
process died is claimed again once its lease runs out. A job claimed more than `attempts` times is failed, so
nothing stays "in progress" for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, Issue, operation_outcome
from hearth.capability.summary import subset
from hearth.interactions.context import Context
from hearth.interactions.export import files, selection
from hearth.interactions.export.config import ExportConfig
from hearth.interactions.export.jobs import job_caller
from hearth.interactions.request import Request
from hearth.storage.base import ExportJobs, Version

log = logging.getLogger("hearth.export")


class Cancelled(Exception):
    """The job was cancelled (removed) or taken over while being written."""


class Worker:
    def __init__(self, ctx: Context, jobs: ExportJobs, config: ExportConfig) -> None:
        self.ctx, self.jobs, self.config = ctx, jobs, config
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.wake = asyncio.Event()  # set by a kick-off of this process
        self._running: set[asyncio.Task] = set()

    async def run(self) -> None:
        while True:
            try:
                await self._sweep()
                while len(self._running) < self.config.max_jobs:
                    job = await self.jobs.claim(self.owner, self.config.lease, time.time())
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
        for job_id in await self.jobs.expired(time.time()):
            await asyncio.to_thread(files.remove, self.config.directory / job_id)
            await self.jobs.remove(job_id)

    # -- one job -----------------------------------------------------------------------------------------

    async def _run_job(self, job: dict[str, Any]) -> None:
        folder = self.config.directory / job["id"]
        try:
            if job["attempts"] > self.config.attempts:
                raise FhirError(500, "exception", f"interrupted {job['attempts'] - 1} times (restarts or crashes)")
            await asyncio.to_thread(files.prepare, folder)
            job.update(output=[], errors=[])
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
        job.update(lease_owner=None, lease_until=0, expires=time.time() + self.config.retention)
        if not await self.jobs.save(job, self.owner):
            await asyncio.to_thread(files.remove, folder)

    async def _write(self, job: dict[str, Any], folder: Any) -> None:
        plan = job["plan"]
        request = Request("operation", job_caller(job), operation="$export")
        errors = files.NdjsonFiles(folder, "errors", self.config.file_bytes)
        renewed = time.monotonic()
        total = 0
        try:
            for position, resource_type in enumerate(plan["types"]):
                elements = _elements_for(plan["elements"], resource_type)
                out = files.NdjsonFiles(folder, resource_type, self.config.file_bytes)
                try:
                    async for page in selection.versions(self.ctx, plan, resource_type, self.config.page):
                        lines = [line for line in (self._line(request, v, elements) for v in page) if line]
                        await asyncio.to_thread(out.write, lines)
                        total += len(lines)
                        if time.monotonic() - renewed > min(1.0, self.config.lease / 3):
                            job["progress"] = f"{position}/{len(plan['types'])} types, {total} resources"
                            await self._renew(job)
                            renewed = time.monotonic()
                except FhirError as error:  # e.g. a search past its deadline: this type's files are incomplete
                    issue = Issue("error", error.code, f"{resource_type}: {error.diagnostics}")
                    await asyncio.to_thread(errors.write, [fhir_json.dumps(operation_outcome([issue]))])
                finally:
                    await asyncio.to_thread(out.close)
                job["output"] += [{"type": resource_type, "name": name, "count": count}
                                  for name, count in out.written if count]
        finally:
            await asyncio.to_thread(errors.close)
        job["errors"] = [{"name": name, "count": count} for name, count in errors.written]
        await self._renew(job)

    async def _renew(self, job: dict[str, Any]) -> None:
        job["lease_until"] = time.time() + self.config.lease
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
