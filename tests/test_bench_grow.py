"""bench/grow.py: a copied Synthea record is consistent, fresh and deterministic."""

from __future__ import annotations

import bz2
import re

from bench import grow
from hearth.capability import fhir_json

BUNDLE = min(f for f in grow.SYNTHEA.glob("*.json.bz2") if not f.name.startswith("0-"))
SHARED = {("Practitioner", "http://hl7.org/fhir/sid/us-npi|9999999619"): "Practitioner/p-1"}


def record() -> grow.Record:
    return grow._record(fhir_json.loads(bz2.decompress(BUNDLE.read_bytes())), SHARED)


def references(value) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "reference"] + [r for v in value.values() for r in references(v)]
    if isinstance(value, list):
        return [r for v in value for r in references(v)]
    return []


def test_copy_has_fresh_ids_and_local_references_to_itself():
    original = list(grow.copy_resources(record(), 0, seed=7))
    copy = list(grow.copy_resources(record(), 2, seed=7))
    old_ids = {r["id"] for r in original}
    new_ids = {f"{r['resourceType']}/{r['id']}" for r in copy}
    assert len(copy) == len(original) and not old_ids & {r["id"] for r in copy}
    refs = [ref for resource in copy for ref in references(resource)]
    assert refs and not any(ref.startswith("urn:uuid:") for ref in refs)
    for ref in refs:  # to the copy itself, a contained resource, or a shared resource left as it was
        assert ref in new_ids or ref.startswith("#") or ref == "Practitioner/p-1" or "?identifier=" in ref, ref
    assert "Practitioner/p-1" in refs
    text = b"".join(fhir_json.dumps(r) for r in copy)
    assert not any(old.encode() in text for old in old_ids)  # no trace of the original ids


def test_copy_identifiers_are_fresh_and_copies_are_deterministic():
    patient = next(r for r in grow.copy_resources(record(), 3, seed=7) if r["resourceType"] == "Patient")
    original = next(r for r in grow.copy_resources(record(), 0, seed=7) if r["resourceType"] == "Patient")
    assert patient["name"] == original["name"]
    old_values = {i["value"] for i in original["identifier"]}
    assert not old_values & {i["value"] for i in patient["identifier"]}
    ssn = next(i["value"] for i in patient["identifier"] if i.get("system") == "http://hl7.org/fhir/sid/us-ssn")
    assert re.fullmatch(r".+-3", ssn)
    again = next(r for r in grow.copy_resources(record(), 3, seed=7) if r["resourceType"] == "Patient")
    other_seed = next(r for r in grow.copy_resources(record(), 3, seed=8) if r["resourceType"] == "Patient")
    assert again == patient and other_seed["id"] != patient["id"]


def test_plan_reaches_the_target_in_seeded_rounds():
    records = [grow.Record(f"p{i}", (("Patient", b"{}"),) * (10 + i), frozenset()) for i in range(5)]
    units = grow.plan(records, seed=1, shared=3, target=100)
    assert sum(u.size for u in units) + 3 >= 100 > sum(u.size for u in units[:-1]) + 3
    assert [u.copy for u in units[:5]] == [0] * 5 and sorted(u.record for u in units[:5]) == list(range(5))
    assert units[5].copy == 1 and units == grow.plan(records, seed=1, shared=3, target=100)
    assert [u.record for u in grow.plan(records, seed=2, shared=3, target=100)] != [u.record for u in units]
