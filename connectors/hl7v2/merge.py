"""ADT A40, merge patient (structure ADT_A39; the IG has no map for it), Hearth's design: for each PID/MRG pair
of the message, in one transaction,

- the surviving patient S is the one PID-3 names (following earlier merges; made from PID-3 if unknown, as v2
  allows), the merged patient M the one MRG-1 names (as stored, links not followed);
- M becomes `active: false` with a link `replaced-by` S; S gets a link `replaces` M and every identifier of M it
  lacks, so a later message naming M's identifiers lands on S;
- references to M (its encounters, reports, observations) are not rewritten: what was recorded about M stays as
  it was recorded, and a reader follows the links;
- an MRG-1 that names no known patient is answered AE 204 (ERR-2 MRG^1^1) and nothing is written; a merge done
  already changes nothing; M already replaced by another patient is a dead letter for a person to decide.
"""

from __future__ import annotations

import copy
from typing import Any

from hearth.connectors.hl7v2.config import Hl7Config
from hearth.connectors.hl7v2.convert import merge_pairs
from hearth.connectors.hl7v2.frame import Refusal, parse_header
from hearth.connectors.hl7v2.matching import find_patient, token, union_identifiers
from hearth.connectors.hl7v2.write import Converted
from hearth.connectors.identity import local_id
from hearth.connectors.writes import commit
from hearth.interactions.context import Context
from hearth.interactions.request import Caller


class MergeConflict(Exception):
    """The merged patient is already replaced by another one than the survivor."""


async def apply(ctx: Context, caller: Caller, config: Hl7Config, text: str, charset: str, source: str
                ) -> Converted:
    """Merge every PID/MRG pair of an A40 message."""
    resources: dict[str, dict[str, Any]] = {}
    expected: dict[str, int] = {}
    for survivor_ids, merged_ids in merge_pairs(text, charset, connector=config.name,
                                                identifier_systems=config.identifier_systems):
        merged = await find_patient(ctx, caller, merged_ids, follow=False)
        if merged is None:
            header = parse_header(text, charset)
            why = f"MRG-1 ({token(merged_ids[0]) if merged_ids else 'empty'}) names no patient Hearth knows"
            return Converted("rejected", Refusal("AE", 204, ("MRG", "1", "1"), why,
                                                 header if not isinstance(header, Refusal) else None), error=why)
        survivor = await find_patient(ctx, caller, survivor_ids)
        if survivor is not None and survivor.id == merged.id:
            continue
        s_key = f"Patient/{survivor.id}" if survivor else \
            f"Patient/{local_id(config.name, 'Patient|' + token(survivor_ids[0]))}"
        s = resources.get(s_key) or (copy.deepcopy(survivor.resource) if survivor else
                                     {"resourceType": "Patient", "id": s_key.split("/", 1)[1],
                                      "identifier": list(survivor_ids), "active": True})
        m = resources.get(f"Patient/{merged.id}") or copy.deepcopy(merged.resource)
        other = _linked(m, "replaced-by")
        if other is not None and other != s_key:
            raise MergeConflict(f"Patient/{merged.id} is already replaced by {other}, not {s_key}")
        if other == s_key and survivor is not None and _merged_into(survivor.resource, merged.resource):
            continue  # merged already
        _link(m, "replaced-by", s_key)
        m["active"] = False
        _link(s, "replaces", f"Patient/{merged.id}")
        s["identifier"] = union_identifiers(s.get("identifier", []), merged.resource.get("identifier", []))
        for key, resource, match in ((s_key, s, survivor), (f"Patient/{merged.id}", m, merged)):
            resource["meta"] = {k: v for k, v in (resource.get("meta") or {}).items()
                                if k not in ("versionId", "lastUpdated")} | {"source": source}
            resources[key] = resource
            if match is not None:
                expected.setdefault(key, match.version)
    written = []
    if resources:
        for result in await commit(ctx, caller, resources, expected):
            if result.version is not None and not result.unchanged:
                written.append(f"Patient/{result.version.id}/_history/{result.version.version_id}")
    return Converted("done", written=written)


def _merged_into(survivor: dict[str, Any], merged: dict[str, Any]) -> bool:
    """Whether the survivor already links to the merged patient and holds its identifiers."""
    return _linked(survivor, "replaces") is not None and \
        union_identifiers(survivor.get("identifier", []), merged.get("identifier", [])) == \
        survivor.get("identifier", [])


def _linked(patient: dict[str, Any], kind: str) -> str | None:
    return next(((link.get("other") or {}).get("reference") for link in patient.get("link", ())
                 if link.get("type") == kind), None)


def _link(patient: dict[str, Any], kind: str, reference: str) -> None:
    links = patient.setdefault("link", [])
    if not any(link.get("type") == kind and (link.get("other") or {}).get("reference") == reference
               for link in links):
        links.append({"other": {"reference": reference}, "type": kind})
