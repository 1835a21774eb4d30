"""MongoDB search over two Synthea patients' records (a woman's and a man's) agrees with the in-memory
matcher, query by query (parsed from real query strings, with chains and _has resolved by the matcher
itself), and pages sorted results completely."""

from __future__ import annotations

import asyncio
import bz2
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from mongomock_motor import AsyncMongoMockClient

from capability.search_parameters import default_registry
from search.extract import extract
from search.matcher import matches
from search.parse import parse_search
from storage.base import Write
from storage.mongo.store import MongoStore

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"
BUNDLES = ("23275f24-df5a-6bcf-17cc-ff6507270b1c", "9a174f9e-ed67-6617-0106-745fb1f9a344")
BASE = "http://hearth.test/fhir"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _local_references(value, ids: dict[str, str]):
    """The bundle's `urn:uuid:` references rewritten to the `Type/id` the entries were stored at."""
    if isinstance(value, dict):
        return {k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else _local_references(v, ids))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_local_references(v, ids) for v in value]
    return value


def _resources() -> list[dict]:
    out = []
    for name in BUNDLES:
        bundle = json.loads(bz2.decompress((SYNTHEA / f"{name}.json.bz2").read_bytes()))
        ids = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[1]}"
               for e in bundle["entry"]}
        for entry in bundle["entry"]:
            resource = _local_references(entry["resource"], ids)
            resource["id"] = entry["fullUrl"].rsplit(":", 1)[1]
            out.append(resource)
    return out


@pytest.fixture(scope="module")
def indexed() -> dict[tuple[str, str], tuple[bytes, list]]:
    """(type, id) -> (body, entries) for every resource of the two bundles."""
    registry = default_registry()
    return {(r["resourceType"], r["id"]): (json.dumps(r).encode(), extract(r, registry, BASE))
            for r in _resources()}


@pytest.fixture(scope="module")
def loaded(indexed) -> MongoStore:
    """One store for the module, loaded once (mongomock is synchronous underneath: no loop is kept)."""
    async def load() -> MongoStore:
        store = MongoStore(AsyncMongoMockClient(), "hearth_synthea")
        await store.open()
        for (rtype, rid), (body, entries) in indexed.items():
            await store.commit([Write(rtype, rid, 1, T0, body, tuple(entries), 0, "create")])
        return store
    return asyncio.run(load())


def parse(resource_type: str, query_string: str, count: int = 5000):
    params = [tuple(part.split("=", 1)) for part in query_string.split("&")]
    return parse_search((resource_type,), [*params, ("_count", str(count))], registry=default_registry(),
                        strict=True, default_count=count, max_count=count, base_url=BASE)


QUERIES = [
    ("Observation", "code=http://loinc.org|8302-2"),
    ("Observation", "date=ge2015&date=lt2018"),
    ("Observation", "value-quantity=gt100"),
    ("Observation", "value-quantity=lt28|http://unitsofmeasure.org|kg/m2"),
    ("Observation", "component-code-value-quantity=http://loinc.org|8480-6$ge120"),
    ("Observation", "category=vital-signs&code:not=http://loinc.org|8302-2"),
    ("Observation", "code:text=body"),
    ("Observation", "subject:Patient.gender=male"),
    ("Observation", "encounter.class=AMB&date=le2012"),
    ("Observation", "value-concept:missing=false"),
    ("Patient", "_has:Observation:patient:code=http://loinc.org|8302-2"),
    ("Patient", "name=a,m&gender=female"),
    ("Patient", "address-city:contains=a"),
    ("Condition", "clinical-status=active&onset-date=ge2000"),
    ("Encounter", "class=http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB&date=sa2015"),
    ("Encounter", "reason-code:missing=true"),
    ("Immunization", "vaccine-code=140&date=ap2016-06"),
    ("MedicationRequest", "intent=order&authoredon=eb2014"),
    ("DiagnosticReport", "result.code=http://loinc.org|2093-3"),
    ("Claim", "patient.name:exact=Nope"),
]


@pytest.mark.parametrize("resource_type,query_string", QUERIES)
async def test_agrees_with_the_matcher(indexed, loaded, resource_type, query_string):
    query = parse(resource_type, query_string)
    entries = {key: value[1] for key, value in indexed.items()}
    by_type: dict[str, list] = {}
    for (rtype, rid), found in entries.items():
        by_type.setdefault(rtype, []).append((rid, found))

    def resolver(types, where) -> bool:  # chains and _has, answered by the matcher over the same data
        return any(matches(where, found, resource_id=rid, resource_type=rtype, resolver=resolver)
                   for rtype in types for rid, found in by_type.get(rtype, ()))

    expected = sorted(rid for (rtype, rid), found in entries.items() if rtype == resource_type
                      and matches(query.where, found, resource_id=rid, resource_type=rtype, resolver=resolver))
    page = await loaded.search(query)
    assert sorted(v.id for v in page.matches) == expected
    if query_string != "patient.name:exact=Nope":
        assert expected, query_string  # not trivially empty


async def test_sorted_paging_visits_everything_in_order(indexed, loaded):
    seen, cursor, pages = [], None, 0
    while True:
        paging = f"&_cursor={cursor}" if cursor else ""
        page = await loaded.search(parse("Observation", f"_sort=-date,code{paging}", count=100))
        seen += [v.id for v in page.matches]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    observations = {rid: found for (rtype, rid), found in indexed.items() if rtype == "Observation"}
    assert sorted(seen) == sorted(observations) and pages == -(-len(observations) // 100) > 1

    def key(rid: str):
        dates = [e.hi for e in observations[rid][1] if e.param == "date"]
        return max(dates)
    latest = [key(rid) for rid in seen]
    assert latest == sorted(latest, reverse=True)
