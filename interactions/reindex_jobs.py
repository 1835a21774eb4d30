"""The SearchParameter re-index jobs: one durable record per version of a SearchParameter in force (the store's
`job_records`, kind "reindex"), named by the parameter's url and the SearchParameter's version, worked by
interactions/reindex_worker.py in whichever process holds its lease.

A job is made by the first process to learn of the version (the one that wrote it, as it commits; any other, as its
follower reads the change; any, at start-up, for a stored SearchParameter without one), all making the same record,
so that a crash between the commit and the job's record loses nothing. The record keeps, per base type, the keyset
position of the last page done (a job taken over resumes there), the counts done and total, and the state:
pending, running, done, failed (after `ATTEMPTS` errors, with the last one) or superseded (its SearchParameter
changed again or was deleted: the newer version's job does the work).

`waiting` lists the types on which the parameter is not searchable until the job is done: every base type of a new
parameter. A changed parameter that keeps its code and type stays searchable, while it is re-indexed, on the types
where its previous version was (results for the resources not yet re-indexed follow the previous expression, as on
HAPI FHIR, where a changed parameter is marked "needs reindex"): refusing a parameter clients already use for the
length of a re-index would break them, while a code or type change is a new parameter to a client.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.interactions.context import Context
from hearth.search.registry import SearchParam, applies_to
from hearth.storage import job_records, leases
from hearth.storage.base import Records

KIND = "reindex"
OPEN = ("pending", "running")  # the states a worker works on
ATTEMPTS = 5  # errors after which a job is failed instead of tried again


def records(ctx: Context) -> Records:
    return job_records(ctx.store)


def job_name(url: str, resource_id: str, version_id: int) -> str:
    """The job of one SearchParameter version: its url and the version (the id too: two resources may share a url)."""
    return f"{url}|{reference(resource_id, version_id)}"


def reference(resource_id: str, version_id: int) -> str:
    return f"SearchParameter/{resource_id}/_history/{version_id}"


def types_of(param: SearchParam) -> list[str]:
    """The resource types `param` indexes."""
    return sorted(t for t in RESOURCE_TYPES if applies_to(param, t))


async def ensure(ctx: Context, param: SearchParam, resource_id: str, version_id: int,
                 previous: tuple[SearchParam, str] | None) -> dict[str, Any]:
    """The job of `param` defined by SearchParameter/`resource_id` at `version_id`, made if there is none yet.
    `previous`: the parameter the version before defined (in force, same url) and that version's job name."""
    jobs = records(ctx)
    name = job_name(param.url, resource_id, version_id)
    job = await jobs.get(KIND, name)
    if job is not None:
        return job
    types = types_of(param)
    searchable = await _searchable_before(jobs, param, previous)
    job = {"name": name, "url": param.url, "code": param.code, "searchParameter": reference(resource_id, version_id),
           "state": "pending", "waiting": [t for t in types if t not in searchable],
           "types": [{"type": t, "after": None, "done": 0, "total": None, "finished": False} for t in types],
           "created": await leases(ctx.store).now(), "started": None, "ended": None, "owner": None,
           "error": None, "failures": 0}
    if not await jobs.add(KIND, name, job):  # another process made it first: theirs it is
        job = await jobs.get(KIND, name) or job
    return job


async def _searchable_before(jobs: Records, param: SearchParam, previous: tuple[SearchParam, str] | None) -> set[str]:
    """The types on which the previous version of the parameter was searchable, if this one keeps its meaning for a
    client (code and type); none otherwise."""
    if previous is None:
        return set()
    old, old_job = previous
    if (old.url, old.code, old.type) != (param.url, param.code, param.type):
        return set()
    job = await jobs.get(KIND, old_job)
    if job is None:  # its job was never made: nothing says it was indexed
        return set()
    return set(types_of(old)) - (set() if job["state"] == "done" else set(job["waiting"]))


def waiting(job: dict[str, Any]) -> list[str]:
    """The types on which the job's parameter is not searchable now."""
    return [] if job["state"] == "done" else job["waiting"]


def status(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`$reindex-status`'s parameters: a `job` parameter per job."""
    return [{"name": "job", "part": _parts(job)} for job in jobs]


def _parts(job: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"name": "url", "valueUri": job["url"]}, {"name": "code", "valueCode": job["code"]},
        {"name": "searchParameter", "valueReference": {"reference": job["searchParameter"]}},
        {"name": "state", "valueCode": job["state"]},
        {"name": "done", "valueInteger": sum(entry["done"] for entry in job["types"])}]
    if all(entry["total"] is not None for entry in job["types"]):
        parts.append({"name": "total", "valueInteger": sum(entry["total"] for entry in job["types"])})
    for name in ("created", "started", "ended"):
        if job[name] is not None:
            parts.append({"name": name, "valueInstant": _instant(job[name])})
    if job["owner"] and job["state"] in OPEN:
        parts.append({"name": "owner", "valueString": job["owner"]})
    if job["error"]:
        parts.append({"name": "error", "valueString": job["error"]})
    parts.extend({"name": "waiting", "valueCode": t} for t in waiting(job))
    for entry in job["types"]:
        if entry["total"] == 0 and entry["finished"]:
            continue  # a type with no resources: nothing to say
        counts = [{"name": "done", "valueInteger": entry["done"]}]
        if entry["total"] is not None:
            counts.append({"name": "total", "valueInteger": entry["total"]})
        parts.append({"name": "type", "part": [{"name": "name", "valueCode": entry["type"]}, *counts,
                                               {"name": "finished", "valueBoolean": entry["finished"]}]})
    return parts


def _instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
