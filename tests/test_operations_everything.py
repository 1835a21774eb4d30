"""$everything at HTTP level on both backends: Patient and Encounter compartments with what they reference, paging
by cursor, `_type`, `_since`, `start`/`end`, the type level, and the caller's scopes."""

from __future__ import annotations

from conftest import FHIR_JSON
from security_helpers import ids, secured

__all__ = ["secured"]  # a fixture, used by name

LOINC = "http://loinc.org"


def obs(oid: str, patient: str, encounter: str | None = None, day: str = "2020-01-01") -> dict:
    resource = {"resourceType": "Observation", "id": oid, "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "8867-4"}]}, "subject": {"reference": f"Patient/{patient}"},
                "effectiveDateTime": day, "performer": [{"reference": "Practitioner/dr"}]}
    if encounter:
        resource["encounter"] = {"reference": f"Encounter/{encounter}"}
    return resource


SEED = [
    {"resourceType": "Organization", "id": "org", "name": "Clinic"},
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
    {"resourceType": "Location", "id": "loc", "name": "Room 1"},
    {"resourceType": "Medication", "id": "med", "code": {"text": "aspirin"}},
    {"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/org"},
     "generalPractitioner": [{"reference": "Practitioner/dr"}]},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/p1"}, "location": [{"location": {"reference": "Location/loc"}}],
     "period": {"start": "2020-01-01"}},
    {"resourceType": "Encounter", "id": "e2", "status": "finished", "class": {"code": "AMB"},
     "subject": {"reference": "Patient/p2"}, "period": {"start": "2020-01-01"}},
    obs("o1", "p1", "e1"), obs("o2", "p1", "e1"), obs("o3", "p1", day="2021-06-01"), obs("o4", "p1", day="2022-06-01"),
    obs("o5", "p2", "e2"),
    {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
     "encounter": {"reference": "Encounter/e1"}},
    {"resourceType": "MedicationRequest", "id": "mr1", "status": "active", "intent": "order",
     "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/med"}},
]
P1 = {"p1", "e1", "o1", "o2", "o3", "o4", "c1", "mr1"}


async def seeded(client) -> None:
    for resource in SEED:
        response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
        assert response.status_code == 201, response.text


def modes(bundle: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for item in bundle.get("entry", []):
        found.setdefault(item["search"]["mode"], set()).add(item["resource"].get("id"))
    return found


async def pages(client, url: str, **params) -> list[dict]:
    """Every page of an $everything, following its next links."""
    found = [(await client.get(url, params=params)).json()]
    while next_link := next((link["url"] for link in found[-1].get("link", []) if link["relation"] == "next"), None):
        found.append((await client.get(next_link)).json())
        assert len(found) < 50
    return found


async def test_patient_everything_is_the_compartment_and_what_it_references(client):
    await seeded(client)
    answer = (await client.get("/Patient/p1/$everything")).json()
    assert answer["resourceType"] == "Bundle" and answer["type"] == "searchset"
    assert modes(answer) == {"match": P1, "include": {"org", "dr", "loc", "med"}}
    assert answer["total"] == len(P1)
    posted = (await client.post("/Patient/p1/$everything", json={"resourceType": "Parameters"},
                                headers=FHIR_JSON)).json()
    assert modes(posted)["match"] == P1
    assert (await client.get("/Patient/nobody/$everything")).status_code == 404
    assert (await client.get("/Encounter/$everything")).status_code == 400


async def test_pages_follow_the_cursor_without_loss_or_repeat(client):
    await seeded(client)
    found = await pages(client, "/Patient/p1/$everything", _count="3")
    matched = [item["resource"]["id"] for page in found for item in page.get("entry", [])
               if item["search"]["mode"] == "match"]
    assert sorted(matched) == sorted(P1) and all(
        sum(item["search"]["mode"] == "match" for item in page.get("entry", [])) <= 3 for page in found)
    assert len(found) >= 3 and "total" not in found[0]
    # a write between pages does not shift them: what was there is still seen once
    first = found[0]
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    await client.put("/Observation/o0", json=obs("o0", "p1"), headers=FHIR_JSON)
    rest = [(await client.get(following)).json()]
    while link := next((x["url"] for x in rest[-1].get("link", []) if x["relation"] == "next"), None):
        rest.append((await client.get(link)).json())
    later = [item["resource"]["id"] for page in [first, *rest] for item in page.get("entry", [])
             if item["search"]["mode"] == "match"]
    assert sorted(set(later)) == sorted(later) and P1 <= set(later)
    tampered = following.replace("_cursor=", "_cursor=x")
    assert (await client.get(tampered)).status_code == 400


async def test_type_since_and_care_dates_narrow_the_record(client):
    await seeded(client)
    typed = (await client.get("/Patient/p1/$everything", params={"_type": "Observation,Practitioner"})).json()
    assert modes(typed) == {"match": {"o1", "o2", "o3", "o4"}, "include": {"dr"}}
    updated = (await client.put("/Observation/o2", json={**obs("o2", "p1", "e1"), "status": "amended"},
                                headers=FHIR_JSON)).json()
    since = (await client.get("/Patient/p1/$everything", params={"_since": updated["meta"]["lastUpdated"]})).json()
    assert modes(since)["match"] == {"o2"}
    dated = (await client.get("/Patient/p1/$everything", params={"start": "2021-01-01", "end": "2021-12-31",
                                                                "_type": "Observation"})).json()
    assert modes(dated)["match"] == {"o3"}


async def test_encounter_everything(client):
    await seeded(client)
    answer = (await client.get("/Encounter/e1/$everything")).json()
    assert modes(answer) == {"match": {"e1", "o1", "o2", "c1"}, "include": {"p1", "loc", "dr"}}


async def test_type_level_walks_every_patient(client):
    await seeded(client)
    found = await pages(client, "/Patient/$everything", _count="4")
    matched = [item["resource"]["id"] for page in found for item in page.get("entry", [])
               if item["search"]["mode"] == "match"]
    assert sorted(matched) == sorted(P1 | {"p2", "e2", "o5"})


async def test_a_patient_scope_sees_only_its_own_record(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.rs patient/Patient.rs", patient="p1")
    answer = (await client.get("/Patient/p1/$everything", headers=auth)).json()
    assert ids(answer) == {"p1", "o1-lab", "o1-vital"}  # no Practitioner scope: dr is left out
    assert (await client.get("/Patient/p2/$everything", headers=auth)).status_code == 404
    assert ids((await client.get("/Patient/$everything", headers=auth)).json()) == {"p1", "o1-lab", "o1-vital"}
    lab = await secured.token("patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
                              "observation-category|laboratory patient/Patient.rs patient/Practitioner.rs",
                              patient="p1")
    assert ids((await client.get("/Patient/p1/$everything", headers=lab)).json()) == {"p1", "o1-lab", "dr"}
    observations_only = await secured.token("patient/Observation.rs", patient="p1")
    assert (await client.get("/Patient/p1/$everything", headers=observations_only)).status_code == 403
