"""The export's answers: kick-off (`$export` at system, Patient and Group level: an operation the dispatcher runs
for the caller), status, cancel, and the files. Resource files are read through the dispatcher too, as the
operation `$export-file` on the file's type, so the caller's scopes are checked and the download is audited;
status, cancel and error files concern the job only and are held to its owner (the client that started it)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, information, invalid, not_found
from hearth.interactions import crud
from hearth.interactions.context import Context
from hearth.interactions.export import params
from hearth.interactions.export.jobs import failed, file_names, manifest, new_job, status_url
from hearth.interactions.request import Caller, Outcome, Request
from hearth.storage.clock import to_instant, utc_now

if TYPE_CHECKING:
    from hearth.interactions.export.service import ExportService

_ACTIVE = ("accepted", "in-progress")


async def kick_off(service: ExportService, ctx: Context, request: Request) -> Outcome:
    level = "system" if request.type is None else "patient" if request.type == "Patient" else "group"
    if level == "patient" and request.id:
        raise invalid("A Patient export is Patient/$export: name patients with the patient parameter (POST)")
    plan = params.plan(ctx, request, level)
    if level == "group":
        plan["group"] = request.id
        members = await _members(ctx, request)
        named = plan["patients"]
        plan["patients"] = [m for m in members if m in set(named)] if named is not None else members
    job = new_job(plan, request.caller, _request_url(ctx, request), to_instant(utc_now()))
    if not await service.jobs.add(job, service.config.max_jobs):
        raise FhirError(429, "throttled", f"{service.config.max_jobs} exports are running (HEARTH_EXPORT_MAX_JOBS): "
                                          "try again later", headers={"Retry-After": str(_retry_after(service))})
    service.worker.wake.set()
    url = status_url(ctx.base_url, job["id"])
    return Outcome(202, body=fhir_json.dumps(information(f"Export accepted: poll {url}")),
                   headers={"Content-Location": url})


async def _members(ctx: Context, request: Request) -> list[str]:
    """The ids of the Group's active Patient members (404 for a Group the caller may not read)."""
    group = ctx.policy.after(Request("read", request.caller, type="Group", id=request.id),
                             await crud.read(ctx, "Group", request.id or ""))
    if group is None:
        raise not_found("Group", request.id or "")
    members = []
    for member in fhir_json.loads(group.body, trusted=True).get("member") or ():
        reference = (member.get("entity") or {}).get("reference") or ""
        resource_type, _, patient = reference.removeprefix(ctx.base_url + "/").partition("/")
        if resource_type == "Patient" and patient and "/" not in patient and not member.get("inactive"):
            members.append(patient)
    return list(dict.fromkeys(members))


def _request_url(ctx: Context, request: Request) -> str:
    path = "/".join(part for part in (request.type, request.id) if part)
    query = urlencode(request.params)
    return f"{ctx.base_url}/{path + '/' if path else ''}$export" + (f"?{query}" if query else "")


def _retry_after(service: ExportService) -> int:
    return max(1, round(service.config.poll * 2))


async def status(service: ExportService, ctx: Context, caller: Caller, job_id: str) -> Outcome:
    """The status answer: 202 with X-Progress while the job waits or runs, 200 with the manifest once done."""
    job = await owned(service, caller, job_id)
    if job["state"] in _ACTIVE:
        return Outcome(202, headers={"X-Progress": job["progress"], "Retry-After": str(_retry_after(service))})
    if job["state"] == "failed":
        raise failed(job)
    return Outcome(200, body=manifest(job, ctx.base_url, service.config.requires_token))


async def cancel(service: ExportService, caller: Caller, job_id: str) -> Outcome:
    """DELETE on the status URL: the job is removed (a worker writing it stops) with its files."""
    await owned(service, caller, job_id)
    await service.jobs.remove(job_id)
    await service.remove_files(job_id)
    return Outcome(202, body=fhir_json.dumps(information(f"Export {job_id} cancelled and its files removed")))


async def export_file(service: ExportService, ctx: Context, request: Request) -> Outcome:
    """`$export-file` on a type (the dispatcher checked the caller may read it): one of the job's files of it."""
    job_id, name = request.param("_jobId") or "", request.param("file") or ""
    await completed_file(service, request.caller, job_id, name, request.type or "")
    return Outcome(200)


async def completed_file(service: ExportService, caller: Caller, job_id: str, name: str,
                         resource_type: str) -> dict[str, Any]:
    """The job, when `name` is one of its files and holds `resource_type` (404 otherwise)."""
    job = await owned(service, caller, job_id)
    if job["state"] != "completed" or file_names(job).get(name) != resource_type:
        raise FhirError(404, "not-found", f"Export {job_id} has no file {name}")
    return job


async def owned(service: ExportService, caller: Caller, job_id: str) -> dict[str, Any]:
    """The job, when `caller` may see it: with authorization on, only the client that started it (404 for
    anyone else, as for a job that does not exist; 401 without a token)."""
    if service.config.requires_token and caller.kind == "anonymous":
        raise FhirError(401, "login", "This export's status and files need the access token that started it",
                        headers={"WWW-Authenticate": 'Bearer realm="hearth"'})
    job = await service.jobs.get(job_id)
    expired = job is not None and job["expires"] is not None and job["expires"] < time.time()
    if job is None or expired or (job["client"] and (caller.kind != "client" or caller.id != job["client"])):
        raise FhirError(404, "not-found", f"No export {job_id} (unknown, expired, cancelled or not yours)")
    return job
