"""Observation/$lastn at HTTP level on both backends: the `max` most recent per code per patient, with the usual
Observation search parameters, and only what the caller's scopes let it search."""

from __future__ import annotations

from conftest import FHIR_JSON
from security_helpers import ids, secured

__all__ = ["secured"]  # a fixture, used by name

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def obs(oid: str, patient: str, code: str, day: str, category: str = "vital-signs") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": LOINC, "code": code}]}, "subject": {"reference": f"Patient/{patient}"},
            "effectiveDateTime": day}


SEED = [  # written out of date order: $lastn orders by effective date, not by when they were stored
    obs("hr-2", "p1", "8867-4", "2021-02-01"), obs("hr-1", "p1", "8867-4", "2021-01-01"),
    obs("hr-3", "p1", "8867-4", "2021-03-01"), obs("bp-1", "p1", "85354-9", "2020-05-01"),
    obs("bp-2", "p1", "85354-9", "2020-06-01"), obs("lab-1", "p1", "2339-0", "2022-01-01", "laboratory"),
    obs("hr-p2", "p2", "8867-4", "2019-01-01"),
]


async def seeded(client) -> None:
    for resource in SEED:
        assert (await client.put(f"/Observation/{resource['id']}", json=resource,
                                 headers=FHIR_JSON)).status_code == 201


async def test_the_most_recent_per_code_per_patient(client):
    await seeded(client)
    latest = (await client.get("/Observation/$lastn", params={"patient": "p1"})).json()
    assert latest["type"] == "searchset" and ids(latest) == {"hr-3", "bp-2", "lab-1"} and latest["total"] == 3
    two = (await client.get("/Observation/$lastn", params={"patient": "p1", "max": "2",
                                                           "category": f"{CATEGORY}|vital-signs"})).json()
    assert [e["resource"]["id"] for e in two["entry"]] == ["hr-3", "hr-2", "bp-2", "bp-1"]
    everyone = (await client.get("/Observation/$lastn", params={"code": f"{LOINC}|8867-4"})).json()
    assert ids(everyone) == {"hr-3", "hr-p2"}
    dated = (await client.get("/Observation/$lastn", params={"subject": "Patient/p1", "date": "lt2021-02-15",
                                                             "code": "8867-4"})).json()
    assert ids(dated) == {"hr-2"}
    posted = (await client.post("/Observation/$lastn", headers=FHIR_JSON, json={
        "resourceType": "Parameters", "parameter": [{"name": "max", "valueInteger": 3},
                                                    {"name": "patient", "valueString": "p1"},
                                                    {"name": "code", "valueString": "8867-4"}]})).json()
    assert [e["resource"]["id"] for e in posted["entry"]] == ["hr-3", "hr-2", "hr-1"]
    assert (await client.get("/Observation/$lastn", params={"max": "0"})).status_code == 400
    assert (await client.get("/Observation/$lastn", params={"nonsense": "1"},
                             headers={"Prefer": "handling=strict"})).status_code == 400


async def test_lastn_sees_only_what_the_token_may_search(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.rs", patient="p1")
    assert ids((await client.get("/Observation/$lastn", headers=auth)).json()) == {"o1-lab", "o1-vital"}
    lab = await secured.token(f"patient/Observation.rs?category={CATEGORY}|laboratory", patient="p1")
    assert ids((await client.get("/Observation/$lastn", headers=lab)).json()) == {"o1-lab"}
    patients_only = await secured.token("patient/Patient.rs", patient="p1")
    assert (await client.get("/Observation/$lastn", headers=patients_only)).status_code == 403
