"""Search over real Synthea data on both backends, checked against a brute-force scan of the raw JSON.

The expected result of every query is computed here in plain Python from the resources themselves, not by the
search engine or its matcher. Every page of every result is fetched through the `next` links.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterable

import httpx
import pytest
import pytest_asyncio

from conftest import BACKENDS, BASE, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings
from synthea_loader import load, synthea_resources

pytestmark = pytest.mark.asyncio(loop_scope="module")

RESOURCES = synthea_resources()
LOINC = "http://loinc.org"


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def corpus(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    app = create_app(Settings(storage=str(tmp / "hearth.db"), base_url=BASE, max_count=500),
                     make_store(request.param, tmp))
    await app.startup()
    await load(app.ctx, RESOURCES)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=120) as client:
        yield client
    await app.shutdown()


# --- plain-Python views of the raw resources ------------------------------------------------------------------

def of_type(resource_type: str) -> list[dict]:
    return [r for r in RESOURCES if r["resourceType"] == resource_type]


def ids(resources: Iterable[dict]) -> set[str]:
    return {f"{r['resourceType']}/{r['id']}" for r in resources}


def codings(concept: Any) -> list[dict]:
    concepts = concept if isinstance(concept, list) else [concept] if concept else []
    return [coding for c in concepts for coding in c.get("coding", [])]


def has_code(concept: Any, code: str, system: str | None = None) -> bool:
    return any(c.get("code") == code and (system is None or c.get("system") == system) for c in codings(concept))


def norm(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().split())


def name_parts(patient: dict) -> list[str]:
    return [part for name in patient.get("name", []) for part in
            [name.get("family", ""), name.get("text", ""), *name.get("given", []), *name.get("prefix", []),
             *name.get("suffix", [])] if part]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def effective(observation: dict) -> datetime | None:
    value = observation.get("effectiveDateTime") or observation.get("effectiveInstant")
    return instant(value) if value else None


def quantity(resource: dict) -> Decimal | None:
    value = resource.get("valueQuantity", {}).get("value")
    return Decimal(str(value)) if value is not None else None


def ref(resource: dict, element: str) -> str | None:
    return (resource.get(element) or {}).get("reference")


PATIENTS = of_type("Patient")
OBSERVATIONS = of_type("Observation")
FIRST = PATIENTS[0]
FAMILY = FIRST["name"][0]["family"]
CITY = FIRST["address"][0]["city"]
IDENTIFIER = next(i for i in FIRST["identifier"] if i.get("system") and i.get("value"))
ENCOUNTER = of_type("Encounter")[0]
RARE_CODE = sorted({c["code"] for o in OBSERVATIONS for c in codings(o["code"])},
                   key=lambda code: sum(has_code(o["code"], code) for o in OBSERVATIONS))[0]


def born(patient: dict) -> str:
    return patient["birthDate"]


MIDDLE_BORN = sorted(born(p) for p in PATIENTS)[len(PATIENTS) // 2]  # splits the patients roughly in half
MIDDLE_YEAR = MIDDLE_BORN[:4]
UNIT = "/min"  # heart and respiratory rates: a UCUM unit with many values in every slice


def patient_of(resource: dict) -> dict | None:
    reference = ref(resource, "subject") or ref(resource, "patient")
    return next((p for p in PATIENTS if f"Patient/{p['id']}" == reference), None)


def systolic_over(observation: dict, limit: int) -> bool:
    return any(has_code(c["code"], "8480-6", LOINC) and c.get("valueQuantity", {}).get("value", 0) > limit
               for c in observation.get("component", []))


# (query, expected resources) — one or more per parameter type, modifier and prefix
CORPUS: list[tuple[str, Callable[[], Iterable[dict]]]] = [
    ("Observation?code=http://loinc.org|8302-2", lambda: [o for o in OBSERVATIONS if has_code(o["code"], "8302-2", LOINC)]),
    ("Observation?code=8302-2,29463-7", lambda: [o for o in OBSERVATIONS
                                                  if has_code(o["code"], "8302-2") or has_code(o["code"], "29463-7")]),
    ("Observation?code:not=8302-2", lambda: [o for o in OBSERVATIONS if not has_code(o["code"], "8302-2")]),
    ("Observation?code:text=body height", lambda: [o for o in OBSERVATIONS
                                                   if norm(o["code"].get("text", "")).startswith("body height")
                                                   or any(norm(c.get("display", "")).startswith("body height")
                                                          for c in codings(o["code"]))]),
    ("Observation?category=vital-signs&code=29463-7", lambda: [o for o in OBSERVATIONS if has_code(o.get("category"), "vital-signs")
                                                               and has_code(o["code"], "29463-7")]),
    (f"Patient?identifier={IDENTIFIER['system']}|{IDENTIFIER['value']}", lambda: [FIRST]),
    ("Patient?gender=female", lambda: [p for p in PATIENTS if p.get("gender") == "female"]),
    (f"Patient?name={FAMILY[:3].lower()}", lambda: [p for p in PATIENTS
                                                   if any(norm(x).startswith(norm(FAMILY[:3])) for x in name_parts(p))]),
    (f"Patient?name:exact={FAMILY}", lambda: [p for p in PATIENTS if FAMILY in name_parts(p)]),
    (f"Patient?family:contains={FAMILY[1:4]}", lambda: [p for p in PATIENTS if any(
        norm(FAMILY[1:4]) in norm(n.get("family", "")) for n in p.get("name", []))]),
    (f"Patient?address-city={CITY}", lambda: [p for p in PATIENTS if any(
        norm(a.get("city", "")).startswith(norm(CITY)) for a in p.get("address", []))]),
    (f"Patient?birthdate=lt{MIDDLE_YEAR}", lambda: [p for p in PATIENTS if born(p) < MIDDLE_YEAR]),
    ("Patient?birthdate=ge1980-06", lambda: [p for p in PATIENTS if born(p) >= "1980-06"]),
    (f"Patient?birthdate={born(FIRST)[:4]}", lambda: [p for p in PATIENTS if born(p)[:4] == born(FIRST)[:4]]),
    (f"Patient?birthdate=ne{born(FIRST)}", lambda: [p for p in PATIENTS if born(p) != born(FIRST)]),
    # one range on each end of a single-valued date (storage/sqlite/search_dates.py), and the year around it
    (f"Patient?birthdate=ge{MIDDLE_YEAR}-01-01&birthdate=lt{int(MIDDLE_YEAR) + 3}-01-01", lambda: [
        p for p in PATIENTS if MIDDLE_YEAR <= born(p) < str(int(MIDDLE_YEAR) + 3)]),
    (f"Patient?birthdate=gt{MIDDLE_BORN}&birthdate=le{int(MIDDLE_YEAR) + 8}", lambda: [
        p for p in PATIENTS if MIDDLE_BORN < born(p) < str(int(MIDDLE_YEAR) + 9)]),
    (f"Patient?birthdate=sa{MIDDLE_YEAR}&birthdate=eb{int(MIDDLE_YEAR) + 5},{MIDDLE_YEAR}", lambda: [
        p for p in PATIENTS if str(int(MIDDLE_YEAR) + 1) <= born(p) < str(int(MIDDLE_YEAR) + 5)]),
    ("Observation?date=ge2015-01-01&date=lt2016-01-01&code=8302-2", lambda: [
        o for o in OBSERVATIONS if has_code(o["code"], "8302-2") and effective(o)
        and datetime(2015, 1, 1, tzinfo=timezone.utc) <= effective(o) < datetime(2016, 1, 1, tzinfo=timezone.utc)]),
    ("Observation?date=sa2019-12-31T23:59:59Z", lambda: [o for o in OBSERVATIONS if effective(o)
                                                         and effective(o) > datetime(2020, 1, 1, tzinfo=timezone.utc)]),
    ("Observation?value-quantity=gt100", lambda: [o for o in OBSERVATIONS if quantity(o) is not None and quantity(o) > 100]),
    (f"Observation?value-quantity=le70|http://unitsofmeasure.org|{UNIT}", lambda: [
        o for o in OBSERVATIONS if quantity(o) is not None and quantity(o) <= 70
        and o["valueQuantity"].get("code") == UNIT and o["valueQuantity"].get("system") == "http://unitsofmeasure.org"]),
    ("Observation?value-quantity:missing=true&category=vital-signs", lambda: [
        o for o in OBSERVATIONS if "valueQuantity" not in o and has_code(o.get("category"), "vital-signs")]),
    ("Observation?component-code-value-quantity=http://loinc.org|8480-6$gt130", lambda: [
        o for o in OBSERVATIONS if systolic_over(o, 130)]),
    ("Observation?_profile=http://hl7.org/fhir/StructureDefinition/bodyweight", lambda: [
        o for o in OBSERVATIONS if "http://hl7.org/fhir/StructureDefinition/bodyweight" in o.get("meta", {}).get("profile", [])]),
    (f"Encounter?subject=Patient/{FIRST['id']}", lambda: [e for e in of_type("Encounter")
                                                          if ref(e, "subject") == f"Patient/{FIRST['id']}"]),
    (f"Observation?patient={FIRST['id']}&category=laboratory", lambda: [
        o for o in OBSERVATIONS if ref(o, "subject") == f"Patient/{FIRST['id']}" and has_code(o.get("category"), "laboratory")]),
    (f"Observation?subject:Patient.birthdate=lt{MIDDLE_YEAR}&code=8302-2", lambda: [
        o for o in OBSERVATIONS if has_code(o["code"], "8302-2")
        and (patient_of(o) or {}).get("birthDate", "9") < MIDDLE_YEAR]),
    # the chain drives alone, read into a list; the :not probe is applied to that list
    (f"Observation?subject:Patient.birthdate=lt{MIDDLE_YEAR}&category:not=laboratory", lambda: [
        o for o in OBSERVATIONS if not has_code(o.get("category"), "laboratory")
        and (patient_of(o) or {}).get("birthDate", "9") < MIDDLE_YEAR]),
    ("Observation?patient.gender=female&code=29463-7", lambda: [
        o for o in OBSERVATIONS if has_code(o["code"], "29463-7") and (patient_of(o) or {}).get("gender") == "female"]),
    (f"Patient?_has:Observation:patient:code={RARE_CODE}", lambda: [
        p for p in PATIENTS if any(has_code(o["code"], RARE_CODE) and ref(o, "subject") == f"Patient/{p['id']}"
                                   for o in OBSERVATIONS)]),
    (f"Observation?_id={OBSERVATIONS[0]['id']},{OBSERVATIONS[5]['id']}", lambda: [OBSERVATIONS[0], OBSERVATIONS[5]]),
    ("Observation?_lastUpdated=gt2000-01-01&code=8302-2", lambda: [o for o in OBSERVATIONS if has_code(o["code"], "8302-2")]),
]


async def fetch_all(client: httpx.AsyncClient, url: str) -> tuple[list[dict], list[dict]]:
    """Every page of a search: (matches, includes), asserting no match comes twice and no include twice on a page
    (a resource may be included again on a later page, for that page's matches)."""
    matches, included, seen = [], [], set()
    while url:
        response = await client.get(url)
        assert response.status_code == 200, response.text
        page = response.json()
        seen = {key for key in seen if key[0] == "match"}
        for entry in page.get("entry", []):
            resource = entry["resource"]
            key = (entry["search"]["mode"], resource["resourceType"], resource["id"])
            assert key not in seen, f"{key} returned twice"
            seen.add(key)
            (matches if entry["search"]["mode"] == "match" else included).append(resource)
        url = next((link["url"] for link in page.get("link", []) if link["relation"] == "next"), None)
    return matches, included


@pytest.mark.parametrize("query,expected", CORPUS, ids=[query for query, _ in CORPUS])
async def test_corpus(corpus, query, expected):
    want = ids(expected())
    got, _ = await fetch_all(corpus, f"/{query}&_count=100")
    assert ids(got) == want
    assert want or query.startswith("Observation?value-quantity:missing")  # most queries must select something


async def test_corpus_is_not_trivial():
    sizes = [len(ids(expected())) for _, expected in CORPUS]
    assert sum(1 for size in sizes if size > 0) >= len(CORPUS) - 2
    assert any(size > 100 for size in sizes)


async def test_sort_descending_date_through_all_pages(corpus):
    got, _ = await fetch_all(corpus, "/Observation?code=8302-2&_sort=-date&_count=7")
    want = sorted((o for o in OBSERVATIONS if has_code(o["code"], "8302-2")), key=effective, reverse=True)
    assert [effective(o) for o in got] == [effective(o) for o in want]
    assert ids(got) == ids(want)


async def test_sort_several_keys(corpus):
    got, _ = await fetch_all(corpus, "/Patient?_sort=gender,-birthdate&_count=3")
    want = sorted(PATIENTS, key=lambda p: (p["gender"], [-ord(ch) for ch in p["birthDate"]]))
    assert [(p["gender"], p["birthDate"]) for p in got] == [(p["gender"], p["birthDate"]) for p in want]


async def test_include_and_revinclude(corpus):
    matches, included = await fetch_all(corpus, "/Observation?code=8302-2&_include=Observation:patient&_count=50")
    assert ids(included) == ids(filter(None, (patient_of(o) for o in matches)))  # (ids(): a set, over all pages)
    encounter = f"Encounter/{ENCOUNTER['id']}"
    matches, included = await fetch_all(corpus, f"/Encounter?_id={ENCOUNTER['id']}&_revinclude=Observation:encounter")
    assert ids(matches) == {encounter}
    assert ids(included) == ids(o for o in OBSERVATIONS if ref(o, "encounter") == encounter)


async def test_summary_count_and_total(corpus):
    body = (await corpus.get("/Observation?category=laboratory&_summary=count")).json()
    assert body["total"] == sum(1 for o in OBSERVATIONS if has_code(o.get("category"), "laboratory"))
    assert "entry" not in body or body["entry"] == []
    accurate = (await corpus.get("/Patient?gender=male&_total=accurate&_count=1")).json()
    assert accurate["total"] == sum(1 for p in PATIENTS if p["gender"] == "male")


async def test_chain_through_all_pages_with_its_total(corpus):
    """A chain driving alone: each page, and the total, from the one list of its matches."""
    query = f"/Observation?patient.birthdate=lt{MIDDLE_YEAR}&_count=40&_total=accurate"
    want = ids(o for o in OBSERVATIONS if (patient_of(o) or {}).get("birthDate", "9") < MIDDLE_YEAR)
    assert len(want) > 80  # several pages
    first = (await corpus.get(query)).json()
    assert first["total"] == len(want)
    got, _ = await fetch_all(corpus, query)
    assert ids(got) == want and len(got) == len(want)


async def test_has_through_all_pages_with_its_total(corpus):
    """`_has` driving alone (on SQLite: read as the ids it references, each page off the (type, id) index), paged both
    ways, with its total; and the same with a second clause tested per row."""
    query = "/Patient?_has:Observation:patient:code=8302-2&_count=3&_total=accurate"
    want = ids(p for p in PATIENTS if any(has_code(o["code"], "8302-2") and ref(o, "subject") == f"Patient/{p['id']}"
                                          for o in OBSERVATIONS))
    assert len(want) > 6  # several pages
    first = (await corpus.get(query)).json()
    assert first["total"] == len(want)
    got, _ = await fetch_all(corpus, query)
    assert ids(got) == want and len(got) == len(want)
    last = (await corpus.get(next(link["url"] for link in first["link"] if link["relation"] == "next"))).json()
    back = (await corpus.get(next(link["url"] for link in last["link"] if link["relation"] == "previous"))).json()
    assert [e["resource"]["id"] for e in back["entry"]] == [e["resource"]["id"] for e in first["entry"]]
    female = ids(p for p in PATIENTS if f"Patient/{p['id']}" in want and p.get("gender") == "female")
    got, _ = await fetch_all(corpus, query + "&gender=female")
    assert ids(got) == female and 0 < len(female) < len(want)
