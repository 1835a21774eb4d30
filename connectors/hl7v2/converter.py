"""One inbox row into FHIR (design note b8): the message converted by the IG's maps (convert.py), what it names
matched with what is stored (matching.py), and everything written as one transaction through the dispatcher as
the caller `connector NAME`: validated, versioned, indexed, announced and audited like any write, all or nothing.
A re-sent message lands on the same resources and, unchanged, makes no new version.

A message that cannot be converted or stored for a reason of its own (the maps fail on it, Hearth finds the result
invalid, two patients share its identifier) becomes a dead letter holding the raw message and the error; a failure
of Hearth itself leaves it pending for the next try.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

from hearth.capability.outcome import FhirError
from hearth.connectors.hl7v2 import merge
from hearth.connectors.hl7v2.config import Hl7Config
from hearth.connectors.hl7v2.convert import Conversion, ConversionError
from hearth.connectors.hl7v2.frame import Header, Refusal, parse_header
from hearth.connectors.hl7v2.maps import maps
from hearth.connectors.hl7v2.matching import (Ambiguous, Match, encounter_merged, find_encounter, find_patient,
                                              linked, merged)
from hearth.connectors.hl7v2.receive import REGISTERING
from hearth.connectors.hl7v2.workers import convert_soon
from hearth.connectors.hl7v2.write import Converted
from hearth.connectors.sync import connector_caller
from hearth.connectors.writes import Changed, commit
from hearth.interactions.context import Context
from hearth.storage.base import InboxRow

ATTEMPTS = 3  # a concurrent change of a matched patient or encounter (412) means: match again and retry


class StoreFailed(Exception):
    """Hearth could not store the message for a reason of its own: it stays pending."""


def message_source(connector: str, header: Header) -> str:
    """`meta.source` of everything a message makes: urn:hl7v2:NAME:MSH-3:MSH-4:MSH-10."""
    parts = (connector, header.component(3), header.component(4), header.control_id)
    return "urn:hl7v2:" + ":".join(urllib.parse.quote(part, safe="") for part in parts)


class Converter:
    def __init__(self, ctx: Context, config: Hl7Config) -> None:
        self.ctx = ctx
        self.config = config
        self.caller = connector_caller(config.name, config.types)
        self.zone = ZoneInfo(config.timezone)
        self.counts: Counter[str] = Counter()
        self._soon: dict[int, asyncio.Future[Conversion]] = {}  # conversions under way, by inbox seq

    async def convert(self, row: InboxRow) -> Converted:
        """Convert and store one message; raises StoreFailed when Hearth itself failed (try again later)."""
        text = row.raw.decode(row.charset)
        header = parse_header(text, row.charset)
        assert isinstance(header, Header), "the inbox holds only messages whose header was read"
        event = maps().event(header.message_type, header.trigger_event)
        try:
            for _ in range(ATTEMPTS):
                try:
                    if event is not None and event.handler == "merge":
                        outcome = await merge.apply(self.ctx, self.caller, self.config, text, row.charset,
                                                    message_source(self.config.name, header))
                    else:
                        outcome = await self._store(header, await self._converted(row))
                except Changed:
                    continue
                self.counts["converted" if outcome.state == "done" else "refused"] += 1
                return outcome
            return self._dead("conflict", "the patient or encounter kept changing while the message was stored")
        except ConversionError as error:
            return self._dead("conversion", str(error), Refusal("AE", 207, error.location, str(error), header))
        except Ambiguous as error:
            return self._dead("ambiguous-patient", str(error))
        except merge.MergeConflict as error:
            return self._dead("merge-conflict", str(error))
        except FhirError as error:
            if error.status >= 500 or error.status == 409:
                raise StoreFailed(f"{error.status}: {error.diagnostics}") from None
            reason = "refused" if error.status in (401, 403) else "invalid"
            return self._dead(reason, f"{error.status}: {error.diagnostics}")

    def prepare(self, rows: list[InboxRow]) -> None:
        """Start converting these rows in the worker, in order, while earlier ones are being stored."""
        for row in rows:
            if row.seq not in self._soon:
                self._soon[row.seq] = convert_soon(
                    row.raw.decode(row.charset), row.charset, connector=self.config.name, timezone=self.zone,
                    types=frozenset(self.config.types), identifier_systems=self.config.identifier_systems,
                    z_segments=self.config.z_segments)

    async def _converted(self, row: InboxRow) -> Conversion:
        self.prepare([row])
        return await self._soon.pop(row.seq)

    def forget(self) -> None:
        """Drop conversions started for rows that will not be stored now (their claim ended)."""
        for future in self._soon.values():
            future.cancel()
        self._soon.clear()

    def _dead(self, reason: str, error: str, refusal: Refusal | None = None) -> Converted:
        self.counts["dead_lettered"] += 1
        return Converted("failed", refusal or Refusal("AE", 207, (), error), reason, error)

    async def _store(self, header: Header, conversion: Conversion) -> Converted:
        resources = {f"{r['resourceType']}/{r['id']}": r for r in conversion.resources}
        authoritative = header.message_type == "ADT"
        renames: dict[str, str] = {}
        expected: dict[str, int] = {}
        subjects = [conversion.patient] if conversion.patient else []
        if conversion.patient:
            patient = await find_patient(self.ctx, self.caller, conversion.patient_identifiers)
            if patient is None and self.config.unknown_patient == "reject" \
                    and header.trigger_event not in REGISTERING:
                text = "PID-3 names no patient Hearth knows"
                return Converted("rejected", Refusal("AE", 204, ("PID", "1", "3"), text, header), error=text)
            if patient is not None:
                self._land(conversion.patient, patient, resources, renames, expected, authoritative, merged)
                subjects = linked(patient.resource)
        if conversion.encounter and conversion.encounter_identifier and conversion.encounter in resources:
            encounter = await find_encounter(self.ctx, self.caller, conversion.encounter_identifier, subjects)
            if encounter is not None:
                event = header.trigger_event
                self._land(conversion.encounter, encounter, resources, renames, expected, authoritative,
                           lambda stored, incoming: encounter_merged(stored, incoming, event))
        for resource in resources.values():
            _rewrite(resource, renames)
        return await self._commit(resources, expected)

    @staticmethod
    def _land(key: str, match: Match, resources: dict[str, dict[str, Any]], renames: dict[str, str],
              expected: dict[str, int], authoritative: bool, merge_into: Any) -> None:
        """Put a converted resource on the stored one it matched: merged into it (ADT), or left out."""
        incoming = resources.pop(key)
        target = f"{incoming['resourceType']}/{match.id}"
        renames[key] = target
        if authoritative:
            resources[target] = {**merge_into(match.resource, incoming), "id": match.id}
            expected[target] = match.version

    async def _commit(self, resources: dict[str, dict[str, Any]], expected: dict[str, int]) -> Converted:
        written = []
        for result in await commit(self.ctx, self.caller, resources, expected):
            if result.unchanged:
                self.counts["unchanged"] += 1
            elif result.version is not None:
                self.counts["stored"] += 1
                written.append(f"{result.version.type}/{result.version.id}/_history/{result.version.version_id}")
        return Converted("done", written=written)


def _rewrite(node: Any, renames: dict[str, str]) -> None:
    """Point references at the stored resources the message's patient and encounter landed on."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference in renames:
            node["reference"] = renames[reference]
        for value in node.values():
            if isinstance(value, (dict, list)):
                _rewrite(value, renames)
    elif isinstance(node, list):
        for item in node:
            _rewrite(item, renames)
