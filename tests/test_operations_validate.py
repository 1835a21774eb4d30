"""$validate at HTTP level on both backends: an OperationOutcome (200, problems as issues) for each mode, the base
profile only, nothing stored."""

from __future__ import annotations

from conftest import FHIR_JSON
from security_helpers import secured

__all__ = ["secured"]  # a fixture, used by name

GOOD = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
BAD = {"resourceType": "Patient", "gender": "female", "birthDate": "1970-13-45", "nonsense": 1}


def issues(response) -> list[dict]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"]


def errors(response) -> list[dict]:
    return [issue for issue in issues(response) if issue["severity"] in ("error", "fatal")]


async def test_create_mode_reports_problems_and_stores_nothing(client):
    ok = issues(await client.post("/Patient/$validate", json=GOOD, headers=FHIR_JSON))
    assert [issue["severity"] for issue in ok] == ["information"]
    bad = errors(await client.post("/Patient/$validate", json=BAD, headers=FHIR_JSON))
    where = " ".join(str(issue.get("expression", "")) + issue["diagnostics"] for issue in bad)
    assert "birthDate" in where and "nonsense" in where
    wrapped = errors(await client.post("/Patient/$validate", headers=FHIR_JSON, json={
        "resourceType": "Parameters", "parameter": [{"name": "resource", "resource": BAD},
                                                    {"name": "mode", "valueCode": "create"}]}))
    assert len(wrapped) == len(bad)
    wrong_type = errors(await client.post("/Observation/$validate", json=GOOD, headers=FHIR_JSON))
    assert "Patient" in wrong_type[0]["diagnostics"]
    searched = (await client.get("/Patient", params={"_summary": "count"})).json()
    assert searched["total"] == 0
    assert (await client.post("/Patient/$validate", content=b"{not json", headers=FHIR_JSON)).status_code == 400
    assert (await client.post("/Patient/$validate", json=GOOD, params={"mode": "upsert"},
                              headers=FHIR_JSON)).status_code == 400


async def test_profiles_other_than_the_base_are_reported(client):
    base = "http://hl7.org/fhir/StructureDefinition/Patient"
    assert errors(await client.post("/Patient/$validate", json=GOOD, params={"profile": base},
                                    headers=FHIR_JSON)) == []
    other = errors(await client.post("/Patient/$validate", json=GOOD, headers=FHIR_JSON, params={
        "profile": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"}))
    assert other[0]["code"] == "not-supported" and "base R4 profile" in other[0]["diagnostics"]


async def test_update_mode_checks_the_id(client):
    assert errors(await client.post("/Patient/p1/$validate", json=GOOD, params={"mode": "update"},
                                    headers=FHIR_JSON)) == []
    other = errors(await client.post("/Patient/p2/$validate", json=GOOD, params={"mode": "update"},
                                     headers=FHIR_JSON))
    assert "differs" in other[0]["diagnostics"]
    type_level = errors(await client.post("/Patient/$validate", json=GOOD, params={"mode": "update"},
                                          headers=FHIR_JSON))
    assert type_level[0]["code"] == "required"


async def test_delete_mode_checks_existence_and_scope(secured):
    client = secured.client
    admin = await secured.token("system/*.cruds", name="seeder")
    assert errors(await client.post("/Patient/p1/$validate", params={"mode": "delete"}, headers=admin)) == []
    missing = errors(await client.post("/Patient/nobody/$validate", params={"mode": "delete"}, headers=admin))
    assert missing[0]["code"] == "not-found"
    reader = await secured.token("patient/Patient.rs", patient="p1")
    refused = errors(await client.post("/Patient/p1/$validate", params={"mode": "delete"}, headers=reader))
    assert refused[0]["code"] == "forbidden"
    hidden = errors(await client.post("/Patient/p2/$validate", params={"mode": "delete"}, headers=reader))
    assert hidden[0]["code"] == "not-found"  # another patient's: as if absent
    assert (await client.get("/Patient/p1", headers=admin)).status_code == 200  # nothing was deleted
