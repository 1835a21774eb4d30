"""The durable job: one JSON document per export (storage/base.py ExportJobs), from kick-off to expiry.

A job holds its plan (interactions/export/params.py), who started it (the client and its grant, which the worker
is held to, restarts included), its state and lease, its progress and, once done, its files. Its status answer
and manifest are made from it alone.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions.request import ANONYMOUS, Caller
from hearth.security.grant import Grant


def new_job(plan: dict[str, Any], caller: Caller, request_url: str, transaction_time: str) -> dict[str, Any]:
    grant = caller.grant
    return {"id": secrets.token_hex(16), "created": time.time(), "state": "accepted", "lease_owner": None,
            "lease_until": 0, "attempts": 0, "expires": None, "client": caller.id if caller.kind == "client" else "",
            "grant": grant.record() if isinstance(grant, Grant) else None, "request": request_url,
            "transaction_time": transaction_time, "plan": plan, "output": [], "errors": [], "deleted": [],
            "progress": "accepted", "failure": None}


def job_caller(job: dict[str, Any]) -> Caller:
    """The caller the job's worker reads as: the kick-off's client with its grant (anonymous without one)."""
    if job["grant"] is None:
        return ANONYMOUS
    return Caller("client", job["client"], Grant.from_record(job["grant"]))


def job_folder(directory: Path, job: dict[str, Any]) -> Path:
    """Where the job's current attempt writes its files (the job's own folder holds one per attempt)."""
    return directory / job["id"] / str(job["attempts"])


def status_url(base_url: str, job_id: str) -> str:
    return f"{base_url}/_export/{job_id}"


def file_url(base_url: str, job_id: str, name: str) -> str:
    return f"{base_url}/_export/{job_id}/{name}"


def manifest(job: dict[str, Any], base_url: str, requires_token: bool) -> bytes:
    """The completion manifest (Bulk Data 2.0 "Response - Complete Status"); `deleted` with `_since` only."""
    def items(kind: str, listed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"type": kind, "url": file_url(base_url, job["id"], item["name"]), "count": item["count"]}
                for item in listed]
    answer = {"transactionTime": job["transaction_time"], "request": job["request"],
              "requiresAccessToken": requires_token,
              "output": [{"type": item["type"], "url": file_url(base_url, job["id"], item["name"]),
                          "count": item["count"]} for item in job["output"]],
              "error": items(JOB_FILES["errors"], job["errors"])}
    if job["plan"].get("since"):
        answer["deleted"] = items(JOB_FILES["deleted"], job.get("deleted") or [])
    return fhir_json.dumps(answer)


def failed(job: dict[str, Any]) -> FhirError:
    """The status answer of a job that failed as a whole (the spec's error status: an OperationOutcome)."""
    return FhirError(500, "exception", f"The export failed: {job['failure']}")


# the files that concern the job, not a resource type (their name's prefix -> what they hold)
JOB_FILES = {"errors": "OperationOutcome", "deleted": "Bundle"}


def file_names(job: dict[str, Any]) -> dict[str, str]:
    """The job's files: name -> what it holds (a resource type, or the prefix of a JOB_FILES file)."""
    names = {item["name"]: item["type"] for item in job["output"]}
    names.update({item["name"]: "errors" for item in job["errors"]})
    names.update({item["name"]: "deleted" for item in job.get("deleted") or ()})
    return names
