"""Each backend's search over two Synthea patients' records agrees with a brute-force run of the in-memory
matcher over the same extracted entries, for queries parsed from real query strings (chains and _has resolved by
the matcher itself); sorted results page completely and in order; includes and totals add up."""

from __future__ import annotations

import asyncio
import bz2
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hearth.search.registry import default_registry
from hearth.search.extract import extract
from hearth.search.matcher import matches
from hearth.search.paging import following
from hearth.search.parse import parse_search
from conftest import BACKENDS, make_store
from hearth.storage.base import Write

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"
BUNDLES = ("057aa36e-b892-9964-75b9-ffb46b097e34", "9a174f9e-ed67-6617-0106-745fb1f9a344")
BASE = "http://hearth.test/fhir"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _localized(value, ids: dict[str, str]):
    """`urn:uuid:X` references rewritten to `Type/X` (the bundle's resource ids are the uuids)."""
    if isinstance(value, dict):
        return {k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else _localized(v, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_localized(v, ids) for v in value]
    return value


@pytest.fixture(scope="module")
def indexed() -> dict[tuple[str, str], list]:
    """(type, id) -> entries of every resource of the two bundles."""
    registry = default_registry()
    out = {}
    for name in BUNDLES:
        bundle = json.loads(bz2.decompress((SYNTHEA / f"{name}.json.bz2").read_bytes()))
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[1]}"
               for e in bundle["entry"]}
        for entry in bundle["entry"]:
            resource = _localized(entry["resource"], ids)
            resource["id"] = entry["fullUrl"].rsplit(":", 1)[1]
            out[(resource["resourceType"], resource["id"])] = extract(resource, registry, BASE)
    return out


def body(rtype: str, rid: str) -> bytes:
    return f'{{"resourceType":"{rtype}","id":"{rid}"}}'.encode()


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, indexed, tmp_path_factory):
    """One store per backend for the module, loaded once (MongoDB without transactions: one write a commit)."""
    store = make_store(request.param, tmp_path_factory.mktemp("synthea"))
    writes = [Write(rtype, rid, 1, T0 + timedelta(microseconds=n), body(rtype, rid), tuple(entries), 0, "create")
              for n, ((rtype, rid), entries) in enumerate(indexed.items())]

    async def load() -> None:
        if hasattr(store, "open"):
            await store.open()
        if store.supports_transactions:
            await store.commit(writes)
        else:
            for write in writes:
                await store.commit([write])
    asyncio.run(load())
    yield store
    asyncio.run(store.close())


def parse(types: tuple[str, ...], query_string: str, count: int = 5000):
    params = [tuple(part.split("=", 1)) for part in query_string.split("&")] if query_string else []
    return parse_search(types, [*params, ("_count", str(count))], registry=default_registry(), strict=True,
                        default_count=count, max_count=count, base_url=BASE)


def brute_force(indexed, types: tuple[str, ...], where) -> set[tuple[str, str]]:
    by_type: dict[str, list] = {}
    for (rtype, rid), entries in indexed.items():
        by_type.setdefault(rtype, []).append((rid, entries))

    def resolver(rtypes, inner) -> bool:
        candidates = [(rtype, rid, entries) for rtype in rtypes for rid, entries in by_type.get(rtype, ())]
        if inner and inner[0].param == "_id":  # a chain's step: only the referenced ids can match
            wanted = {code for pred in inner[0].preds for _, code in pred.keys}
            candidates = [c for c in candidates if c[1] in wanted]
        return any(matches(inner, entries, resource_id=rid, resource_type=rtype, resolver=resolver)
                   for rtype, rid, entries in candidates)
    return {(rtype, rid) for (rtype, rid), entries in indexed.items() if (not types or rtype in types)
            and matches(where, entries, resource_id=rid, resource_type=rtype, resolver=resolver)}


QUERIES = [
    ("Observation", "code=http://loinc.org|8302-2"),
    ("Observation", "code=8302-2,29463-7&status=final"),
    ("Observation", "category=vital-signs&code:not=http://loinc.org|8302-2"),
    ("Observation", "date=ge2015&date=lt2018"),
    ("Observation", "date=eq2016"),
    ("Observation", "date=ne2016"),
    ("Observation", "date=sa2019-06-01"),
    ("Observation", "date=ap2016-06"),
    ("Observation", "value-quantity=gt100"),
    ("Observation", "value-quantity=lt28|http://unitsofmeasure.org|kg/m2"),
    ("Observation", "value-quantity=ap80||kg"),
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$ge120"),
    ("Observation", "combo-code-value-quantity=http://loinc.org|8462-4$lt80"),
    ("Observation", "code:text=body"),
    ("Observation", "subject:Patient.gender=male"),
    ("Observation", "encounter.class=AMB&date=le2012"),
    ("Observation", "value-concept:missing=false"),
    ("Observation", "value-quantity:missing=true&category=laboratory"),
    ("Patient", "_has:Observation:patient:code=http://loinc.org|8302-2"),
    ("Patient", "name=a,m&gender=female"),
    ("Patient", "address-city:contains=a"),
    ("Patient", "family:exact=Nope"),
    ("Condition", "clinical-status=active&onset-date=ge2000"),
    ("Encounter", "class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB&date=sa2015"),
    ("Encounter", "reason-code:missing=true"),
    ("Encounter", "_has:Observation:encounter:value-quantity=gt120"),
    ("Immunization", "vaccine-code=140&date=ap2016-06"),
    ("MedicationRequest", "intent=order&authoredon=eb2014"),
    ("DiagnosticReport", "result.code=http://loinc.org|2093-3"),
    ("DiagnosticReport", "result:Observation.subject:Patient.gender=female"),
    ("Claim", "patient.name:exact=Nope"),
]


@pytest.mark.parametrize("resource_type,query_string", QUERIES)
async def test_agrees_with_the_matcher(indexed, store, resource_type, query_string):
    query = parse((resource_type,), query_string)
    want = brute_force(indexed, (resource_type,), query.where)
    page = await store.search(query)
    assert {(v.type, v.id) for v in page.matches} == want
    assert not page.more and len(page.matches) == len(want)
    assert want or "Nope" in query_string  # not trivially empty


async def test_system_search_agrees_with_the_matcher(indexed, store):
    query = parse((), "_type=Patient,Practitioner,Organization")
    page = await store.search(query)
    assert {(v.type, v.id) for v in page.matches} == brute_force(indexed, query.types, query.where) != set()


async def test_sorted_paging_visits_everything_in_order(indexed, store):
    seen, pages = [], 0
    query = parse(("Observation",), "_sort=-date,code", count=100)
    while query is not None:
        page = await store.search(query)
        seen += [v.id for v in page.matches]
        pages += 1
        query = following(query, page)
    observations = {rid: entries for (rtype, rid), entries in indexed.items() if rtype == "Observation"}
    assert sorted(seen) == sorted(observations) and pages == -(-len(observations) // 100) > 1
    latest = [max((e.hi for e in observations[rid] if e.param == "date"), default="") for rid in seen]
    assert latest == sorted(latest, reverse=True)


async def test_includes_and_totals(indexed, store):
    query = parse(("Observation",), "code=http://loinc.org|8302-2&_include=Observation:patient&_total=accurate",
                  count=3)
    page = await store.search(query)
    want = brute_force(indexed, ("Observation",), query.where)
    assert page.total == len(want) > 3 and len(page.matches) == 3
    patients = {(e.target_type, e.target_id) for v in page.matches for e in indexed[(v.type, v.id)]
                if e.param == "patient"}
    assert {(v.type, v.id) for v in page.included} == patients
    query = parse(("Observation",), "category=laboratory", count=0)
    counted = await store.search(query)
    assert counted.total == len(brute_force(indexed, ("Observation",), query.where)) > 0 and not counted.matches
