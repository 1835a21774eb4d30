"""AuditEvents: one for every access to the FHIR API, shaped after IHE Basic Audit Log Patterns, in an
append-only audit log of its own (storage/*/audit_log.py), readable as `AuditEvent` resources.

- Who: the client (`agent[0]`, the application) and, for a user's token, the user (`agent[1]`, the requestor).
- What: the interaction (`subtype`, R4 restful-interaction codes), its action (C R U D E), the resources it
  touched or returned (`entity`, role domain resource, `Type/id/_history/N`), the Patients they belong to
  (`entity`, role patient), and a search's query (`entity.query`, base64); outcome 0, 4 (refused or the client's
  error) or 8 (Hearth's failure), with the error.
- When and where: `recorded`, the observer (this Hearth).

A write's record is committed with the write (Context.commit hands it to the store). Any other interaction's
record is appended before its answer leaves: records are gathered into batches, each one transaction, and the
answer waits for its batch (a group commit), so no access goes unrecorded across a crash; if the audit log cannot be
written the answer is a 503, not data. Hearth's own reads and writes (`system`: import, its status writes) are
not API accesses and are not recorded.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from datetime import timedelta
from typing import Any, Sequence
from urllib.parse import urlencode

import orjson

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError, not_found
from hearth.interactions.audit import Noted
from hearth.interactions.bundles import bundle, entry
from hearth.interactions.request import Caller, Outcome, Request
from hearth.search.compartments import compartment_params
from hearth.search.entries import ReferenceEntry
from hearth.search.extract import extract
from hearth.storage.base import AuditQuery, AuditRecord, Version, Write
from hearth.storage.clock import to_instant, utc_now

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ACTION = {"create": "C", "conditional-create": "C", "read": "R", "vread": "R", "history-instance": "R",
           "history-type": "R", "history-system": "R", "search-type": "E", "search-system": "E",
           "search-compartment": "E", "update": "U", "conditional-update": "U", "patch": "U",
           "conditional-patch": "U", "delete": "D", "conditional-delete": "D", "batch": "E", "transaction": "E",
           "operation": "E", "capabilities": "R"}
_SEARCHES = frozenset({"search-type", "search-system", "search-compartment"})
_EVENT_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
               "display": "RESTful Operation"}
_SEARCH_PARAMS = {"date", "agent", "entity", "patient", "outcome", "_count", "_cursor"}


class Batches:
    """Appends records in batches: whoever asks while a batch is being written joins the next one."""

    def __init__(self, append: Any) -> None:
        self._append = append
        self._waiting: list[tuple[AuditRecord, asyncio.Future]] = []
        self._writer: asyncio.Task | None = None  # held: the loop keeps only weak references to tasks

    async def add(self, record: AuditRecord) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((record, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._append([record for record, _ in batch])
            except Exception as error:  # every waiter hears it: its answer must not leave unrecorded
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)


async def keep_for(log: Any, days: float, every: float = 3600.0) -> None:
    """Purge the records older than `days`, now and every `every` seconds (the retention setting)."""
    while True:
        await purge_older(log, days)
        await asyncio.sleep(every)


async def purge_older(log: Any, days: float) -> int:
    """Remove the records made more than `days` ago; how many."""
    cutoff = to_instant(utc_now() - timedelta(days=days))
    removed = await log.purge(cutoff)
    if removed:
        logging.getLogger("hearth.audit").info("audit retention: %d records before %s removed", removed, cutoff)
    return removed


class Audit:
    """The audit trail of one context (interactions/audit.py)."""

    def __init__(self, ctx: Any, log: Any) -> None:
        self.ctx = ctx
        self.log = log  # storage/*/audit_log.py
        self.batches = Batches(log.append)
        self.source = {"observer": {"display": f"Hearth {ctx.base_url}"},
                       "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                 "code": "4", "display": "Application Server"}]}

    # -- recording ---------------------------------------------------------------------------------------

    async def accessed(self, request: Request, outcome: Outcome | None, error: FhirError | None,
                       noted: Noted) -> None:
        caller = request.caller
        if caller.kind == "system" or request.interaction == "capabilities":
            return
        if error is None and (noted.committed or request.interaction in ("batch", "transaction")):
            return  # the writes' records went with them; a Bundle's entries are recorded one by one
        versions = noted.shown if error is None else []
        record = self._record(caller, request.interaction, request.type, versions, error,
                              query=_query(request) if request.interaction in _SEARCHES else None,
                              asked=request)
        try:
            await self.batches.add(record)
        except Exception:
            raise FhirError(503, "transient", "The audit log cannot be written: nothing is answered unrecorded") \
                from None

    def for_writes(self, caller: Caller, writes: Sequence[Write]) -> list[AuditRecord]:
        if caller.kind == "system":
            return []
        # the writes of one commit share its caller and its moment: worked out once for all of their records
        now, who = to_instant(utc_now()), _who(caller)
        agents = _agents(caller, *who)
        return [self._record(caller, write.interaction, write.type,
                             [Version(write.type, write.id, write.version_id, write.last_updated, write.body is None,
                                      write.body or b"")], None, patients=_patients(write.type, write.id, write.entries),
                             now=now, who=who, agents=agents)
                for write in writes]

    def _record(self, caller: Caller, interaction: str, resource_type: str | None, versions: Sequence[Version],
                error: FhirError | None, query: str | None = None, asked: Request | None = None,
                patients: set[str] | None = None, now: str | None = None, who: tuple[str, str | None] | None = None,
                agents: list[dict[str, Any]] | None = None) -> AuditRecord:
        now = now or to_instant(utc_now())
        record_id = str(uuid.uuid4())
        if patients is None:
            patients = {patient for version in versions for patient in self.patients_of(version)}
        patients = sorted(patients)
        entities = [f"{v.type}/{v.id}" for v in versions]
        client, user = who or _who(caller)
        outcome = "0" if error is None else "8" if error.status >= 500 else "4"
        event: dict[str, Any] = {
            "resourceType": "AuditEvent", "id": record_id,
            "meta": {"lastUpdated": now},
            "type": _EVENT_TYPE,
            "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": _subtype(interaction)}],
            "action": _ACTION.get(interaction, "E"), "recorded": now, "outcome": outcome,
            "agent": agents or _agents(caller, client, user),
            "source": self.source,
        }
        if error is not None:
            event["outcomeDesc"] = f"{error.status}: {error.diagnostics}"[:1000]
        entity = [{"what": {"reference": f"{v.type}/{v.id}/_history/{v.version_id}"},
                   "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                   "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"}}
                  for v in versions]
        entity += [{"what": {"reference": f"Patient/{patient}"},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                    "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
                   for patient in patients]
        if asked is not None and not versions and asked.type and asked.id:  # a refused or failed read or write
            entity.append({"what": {"reference": f"{asked.type}/{asked.id}"}})
            entities.append(f"{asked.type}/{asked.id}")
        if query is not None:
            entity.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                                    "code": "2"},
                           "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
                           "query": base64.b64encode(query.encode()).decode(),
                           "description": f"{resource_type or ''}?{query}"[:1000]})
        if entity:
            event["entity"] = entity
        return AuditRecord(record_id, now, " ".join(filter(None, (client, user))), outcome, tuple(patients),
                           tuple(dict.fromkeys(entities)), orjson.dumps(event))

    def patients_of(self, version: Version) -> set[str]:
        """The Patients a version belongs to: itself, or those its Patient-compartment references name."""
        if version.type == "Patient" or not version.body or not compartment_params("Patient", version.type):
            return _patients(version.type, version.id, ())
        entries = extract(fhir_json.loads(version.body, trusted=True), self.ctx.registry, self.ctx.base_url)
        return _patients(version.type, version.id, entries)

    async def close(self) -> None:
        await self.log.close()

    # -- reading -----------------------------------------------------------------------------------------

    async def answer(self, request: Request) -> Outcome:
        if request.interaction in ("read", "vread"):
            body = await self.log.read(request.id or "")
            if body is None or request.version_id not in (None, "1"):
                raise not_found("AuditEvent", request.id or "")
            version = Version("AuditEvent", request.id or "", 1, utc_now(), False, body)
            return Outcome(200, version)
        if request.interaction != "search-type":
            raise FhirError(400, "not-supported", f"AuditEvents can be read and searched, not {request.interaction}")
        query = _audit_query(request, self.ctx.max_count, self.ctx.default_count)
        found = await self.log.search(query)
        entries = [entry(f"{self.ctx.base_url}/AuditEvent/{record_id}", body, search={"mode": "match"})
                   for _, record_id, body in found]
        kept = [(name, value) for name, value in request.params if name != "_cursor"]
        links = [("self", f"{self.ctx.base_url}/AuditEvent?{urlencode(request.params)}")]
        if len(found) == query.count:
            cursor = f"{found[-1][0]}|{found[-1][1]}"
            links.append(("next", f"{self.ctx.base_url}/AuditEvent?{urlencode([*kept, ('_cursor', cursor)])}"))
        return Outcome(200, body=bundle("searchset", entries, None, links))


def _patients(resource_type: str, resource_id: str, entries: Sequence[Any]) -> set[str]:
    """The Patients a resource with these index entries belongs to: itself, or those its Patient-compartment
    references name."""
    if resource_type == "Patient":
        return {resource_id}
    params = compartment_params("Patient", resource_type)
    return {e.target_id for e in entries if isinstance(e, ReferenceEntry) and e.param in params
            and e.target_type == "Patient" and e.target_id}


def _audit_query(request: Request, max_count: int, default_count: int) -> AuditQuery:
    fields: dict[str, Any] = {"count": default_count}
    for name, value in request.params:
        if name not in _SEARCH_PARAMS:
            raise FhirError(400, "not-supported", f"AuditEvent search supports {', '.join(sorted(_SEARCH_PARAMS))}; "
                                                  f"not {name!r}", (name,))
        if name == "date":
            prefix, moment = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
            if prefix in ("ge", "gt", "eq"):
                fields["since"] = moment + ("\uffff" if prefix == "gt" else "")
            if prefix in ("le", "lt", "eq"):
                fields["until"] = moment + ("" if prefix == "lt" else "\uffff")
        elif name == "patient":
            fields["patient"] = value.removeprefix("Patient/")
        elif name == "_count":
            if not value.isdigit():
                raise FhirError(400, "invalid", "_count must be a number", ("_count",))
            fields["count"] = max(1, min(int(value[:9]), max_count))
        elif name == "_cursor":
            recorded, _, record_id = value.partition("|")
            fields["before"] = (recorded, record_id)
        else:
            fields[name] = value
    return AuditQuery(**fields)


def _who(caller: Caller) -> tuple[str, str | None]:
    grant = caller.grant
    if caller.kind in ("subscription", "connector"):
        return f"{caller.kind}/{caller.id}", grant.user if grant else None
    if grant is None:
        return "anonymous", None
    return grant.client, grant.fhir_user or grant.user


def _agents(caller: Caller, client: str, user: str | None) -> list[dict[str, Any]]:
    agents = [{"type": {"coding": [{"system": _DCM, "code": "110150", "display": "Application"}]},
               "who": {"identifier": {"system": "urn:hearth:client", "value": client}},
               "requestor": user is None}]
    if user is not None:
        who = {"reference": user} if "/" in user else {"identifier": {"system": "urn:hearth:user", "value": user}}
        agents.append({"type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
                       "who": who, "requestor": True})
    return agents


def _subtype(interaction: str) -> str:
    """R4's restful-interaction code (conditional variants are their interaction)."""
    return interaction.removeprefix("conditional-")


def _query(request: Request) -> str:
    return urlencode(request.params)
