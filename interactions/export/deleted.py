"""The deletions of an export with `_since` (Bulk Data 2.0, the manifest's `deleted`): the resources of a type that
the export would have held but that were deleted after `_since` and are still deleted at its `transactionTime`,
read from the type's history a page at a time.

"Would have held" is judged on each one's last version before the delete: it matches one of the type's
`_typeFilter`s and, for Patient and Group exports, lies in the compartment of one of the export's patients. A
deletion is shown only to a caller whose scopes would show it in a search (a restricted scope sees none)."""

from __future__ import annotations

import uuid
from typing import Any, AsyncIterator, Callable
from urllib.parse import parse_qsl

from hearth.capability import fhir_json
from hearth.interactions.context import Context
from hearth.interactions.refusals import answered
from hearth.interactions.request import Request
from hearth.interactions.search import exists_for, parse_query
from hearth.search.compartments import compartment_params
from hearth.search.entries import ReferenceEntry
from hearth.search.extract import extract
from hearth.search.matcher import compile_matcher
from hearth.storage.base import Version
from hearth.storage.clock import parse_instant


async def deletions(ctx: Context, plan: dict[str, Any], resource_type: str, request: Request,
                    transaction_time: str, page: int) -> AsyncIterator[list[str]]:
    """Ids of the type's resources deleted in the export's window, a history page at a time."""
    since, until = parse_instant(plan["since"]), parse_instant(transaction_time)
    held = _would_hold(ctx, plan, resource_type, request)
    before: int | None = None
    while True:
        with answered():  # a history read past its deadline is a FhirError (the job notes it as an error)
            found = await ctx.store.history(resource_type, None, since, before, page)
        ids = []
        for _, version in found.entries:
            if version.deleted and version.last_updated <= until and await _still_deleted(ctx, version) \
                    and ctx.policy.after(request, version) is not None and await held(version):
                ids.append(version.id)
        if ids:
            yield ids
        if len(found.entries) < page:
            return
        before = found.entries[-1][0]


def bundle(resource_type: str, ids: list[str], transaction_time: str) -> bytes:
    """One NDJSON line: a transaction Bundle of a DELETE entry per id."""
    return fhir_json.dumps({"resourceType": "Bundle", "id": str(uuid.uuid4()),
                            "meta": {"lastUpdated": transaction_time}, "type": "transaction",
                            "entry": [{"request": {"method": "DELETE", "url": f"{resource_type}/{resource_id}"}}
                                      for resource_id in ids]})


async def _still_deleted(ctx: Context, tombstone: Version) -> bool:
    """Whether the delete is the resource's current version (not recreated since, nor deleted twice: once each)."""
    current = await ctx.store.read(tombstone.type, tombstone.id)
    return current is not None and current.deleted and current.version_id == tombstone.version_id


def _would_hold(ctx: Context, plan: dict[str, Any], resource_type: str, request: Request) -> Callable:
    """The check "the export would have held it", made on a tombstone's last live version."""
    filters = [parse_query(ctx, (resource_type,), parse_qsl(text, keep_blank_values=True), strict=True).where
               for text in plan["filters"].get(resource_type) or ()]
    patient_level = plan["level"] != "system"
    named = set(plan["patients"]) if plan.get("patients") is not None else None

    resolve = exists_for(ctx, request.caller)  # chains and _has of a filter

    async def held(tombstone: Version) -> bool:
        if not filters and not patient_level:
            return True
        live = await ctx.store.vread(tombstone.type, tombstone.id, tombstone.version_id - 1)
        if live is None or live.deleted:  # expunged: nothing left to judge it by
            return False
        entries = extract(fhir_json.loads(live.body, trusted=True), ctx.registry, base_url=ctx.base_url)
        if patient_level:
            patients = _patients(resource_type, live.id, entries)
            if not patients or (named is not None and not patients & named):
                return False
        for where in filters:
            if await compile_matcher(where).evaluate(entries, resource_id=live.id, resource_type=resource_type,
                                                     resolver=resolve):
                return True
        return not filters
    return held


def _patients(resource_type: str, resource_id: str, entries: list) -> set[str]:
    """The patients in whose compartments a resource with these index entries lies."""
    if resource_type == "Patient":
        return {resource_id}
    params = set(compartment_params("Patient", resource_type))
    return {entry.target_id for entry in entries if type(entry) is ReferenceEntry and entry.param in params
            and entry.target_type == "Patient" and entry.target_id}
