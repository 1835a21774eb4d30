"""The export service: installed on a context (its operations and CapabilityStatement part), then started and
stopped with the server (its worker)."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.interactions.context import Context
from hearth.interactions.export import files, operations
from hearth.interactions.export.config import ExportConfig
from hearth.interactions.export.jobs import job_folder
from hearth.interactions.export.worker import Worker
from hearth.interactions.operations import served
from hearth.interactions.request import Caller, Outcome
from hearth.storage import export_jobs

BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
_DEFINITIONS = ((None, "export", f"{BULK_DATA}/OperationDefinition/export"),
                ("Patient", "export", f"{BULK_DATA}/OperationDefinition/patient-export"),
                ("Group", "export", f"{BULK_DATA}/OperationDefinition/group-export"))


class ExportService:
    def __init__(self, ctx: Context, config: ExportConfig) -> None:
        self.ctx, self.config = ctx, config
        self.jobs = export_jobs(ctx.store)
        self.worker = Worker(ctx, self.jobs, config)
        self._task: asyncio.Task | None = None

    def install(self) -> None:
        """The kick-off and file operations, and the CapabilityStatement's operations and `instantiates`."""
        ctx = self.ctx
        for resource_type, name, definition in _DEFINITIONS:
            ctx.operations[(resource_type, "$export")] = partial(operations.kick_off, self)
            served(ctx, name, definition, resource_type)
        for resource_type in RESOURCE_TYPES:
            ctx.operations[(resource_type, "$export-file")] = partial(operations.export_file, self)
        ctx.capability_extras.setdefault("instantiates", []).append(f"{BULK_DATA}/CapabilityStatement/bulk-data")

    async def open(self) -> None:
        await self.jobs.open()

    def start(self) -> None:
        self._task = asyncio.create_task(self.worker.run(), name="hearth-export-worker")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.worker.stop()

    # -- what the HTTP layer asks (server/rest.py) ------------------------------------------------------------

    async def status(self, caller: Caller, job_id: str) -> Outcome:
        return await operations.status(self, self.ctx, caller, job_id)

    async def cancel(self, caller: Caller, job_id: str) -> Outcome:
        return await operations.cancel(self, caller, job_id)

    async def file_path(self, caller: Caller, job_id: str, name: str) -> Path:
        """Where one of the caller's completed job's files lies (a file of resources: once the dispatcher has let the
        caller read its type; an error or deletions file concerns the job only)."""
        job = await operations.completed_file(self, caller, job_id, name, name.partition("-")[0])
        return job_folder(self.config.directory, job) / name

    async def remove_files(self, job_id: str) -> None:
        await asyncio.to_thread(files.remove, self.config.directory / job_id)
