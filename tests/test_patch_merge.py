"""JSON Merge Patch (RFC 7396) over HTTP: as application/merge-patch+json, as application/json (fhirpy), by id and
by condition, with If-Match, and in batch and transaction Bundles; and how application/json bodies are read."""

from __future__ import annotations

import base64

import orjson
import pytest

from conftest import FHIR_JSON

MERGE = {"Content-Type": "application/merge-patch+json"}
PATIENT = {"resourceType": "Patient", "active": True, "gender": "male", "birthDate": "1974-12-25",
           "identifier": [{"system": "http://hospital.test/mrn", "value": "m1"}],
           "name": [{"family": "Chalmers", "given": ["Peter"]}],
           "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                                         "code": "S"}], "text": "Single"}}


async def make_patient(client) -> dict:
    response = await client.post("/Patient", json=PATIENT, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


async def test_merge_patch(client):
    created = await make_patient(client)
    patch = {"active": False, "gender": None, "name": [{"family": "Smith"}], "maritalStatus": {"text": "Married"},
             "telecom": [{"system": "phone", "value": "555"}], "deceasedBoolean": None}
    response = await client.patch(f"/Patient/{created['id']}", json=patch, headers=MERGE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["active"] is False and "gender" not in body  # null removes a member
    assert body["name"] == [{"family": "Smith"}]  # arrays are replaced whole
    assert body["maritalStatus"] == {**PATIENT["maritalStatus"], "text": "Married"}  # objects merge
    assert body["telecom"] == [{"system": "phone", "value": "555"}] and body["birthDate"] == "1974-12-25"
    assert body["meta"]["versionId"] == "2" and response.headers["etag"] == 'W/"2"'


async def test_merge_patch_as_fhirpy_sends_it(client):
    """fhirpy: PATCH with Content-Type application/json, ?_format=json, a JSON object of the changed fields."""
    created = await make_patient(client)
    headers = {"Content-Type": "application/json", "Accept": "application/fhir+json"}
    response = await client.patch(f"/Patient/{created['id']}?_format=json", headers=headers,
                                  content=orjson.dumps({"active": False, "birthDate": None}))
    assert response.status_code == 200, response.text
    assert response.json()["active"] is False and "birthDate" not in response.json()
    response = await client.patch("/Patient?identifier=http://hospital.test/mrn|m1&_format=json", headers=headers,
                                  content=orjson.dumps({"gender": "other"}))
    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"] and response.json()["gender"] == "other"


async def test_application_json_is_read_by_its_body(client):
    created = await make_patient(client)
    url, headers = f"/Patient/{created['id']}", {"Content-Type": "application/json"}
    response = await client.patch(url, json=[{"op": "replace", "path": "/gender", "value": "female"}],
                                  headers=headers)  # an array: JSON Patch
    assert response.status_code == 200 and response.json()["gender"] == "female", response.text
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "male"}]}]}
    response = await client.patch(url, json=fhirpath, headers=headers)  # a Parameters: FHIRPath Patch
    assert response.status_code == 200 and response.json()["gender"] == "male", response.text


async def test_merge_patch_results_are_validated_like_an_update(client):
    created = await make_patient(client)
    url = f"/Patient/{created['id']}"
    for patch in ({"gender": 12}, {"id": "other"}, {"id": None}, {"resourceType": "Observation"},
                  {"maritalStatus": {"coding": None, "text": None}}, {"nickname": "Pete"}):
        response = await client.patch(url, json=patch, headers=MERGE)
        assert response.status_code == 422, (patch, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.patch(url, json=[{"active": False}], headers=MERGE)).status_code == 400  # not an object
    assert (await client.get(url)).json() == created


async def test_a_fhir_json_patch_that_is_not_parameters_says_what_to_send(client):
    created = await make_patient(client)
    response = await client.patch(f"/Patient/{created['id']}", json={"resourceType": "Patient", "active": False},
                                  headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "this is a Patient" in diagnostics and "application/merge-patch+json" in diagnostics
    response = await client.patch(f"/Patient/{created['id']}", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "application/merge-patch+json" in response.text


async def test_merge_patch_if_match_and_conditional(client):
    created = await make_patient(client)
    url = f"/Patient/{created['id']}"
    stale = await client.patch(url, json={"active": False}, headers={**MERGE, "If-Match": 'W/"7"'})
    assert stale.status_code == 412, stale.text
    fresh = await client.patch(url, json={"active": False}, headers={**MERGE, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200 and fresh.json()["active"] is False, fresh.text
    conditional = await client.patch("/Patient?identifier=http://hospital.test/mrn|m1", json={"active": True},
                                     headers={**MERGE, "If-Match": 'W/"2"'})
    assert conditional.status_code == 200 and conditional.json()["meta"]["versionId"] == "3", conditional.text


def binary(patch: dict, content_type: str = "application/merge-patch+json") -> dict:
    return {"resourceType": "Binary", "contentType": content_type, "data": base64.b64encode(orjson.dumps(patch)).decode()}


def bundle(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


async def test_merge_patch_in_a_batch(client):
    created = await make_patient(client)
    entry = {"resource": binary({"active": False}), "request": {"method": "PATCH", "url": f"Patient/{created['id']}"}}
    unknown = {"resource": binary({"active": False}, "text/plain"),
               "request": {"method": "PATCH", "url": f"Patient/{created['id']}"}}
    response = await client.post("/", json=bundle("batch", entry, unknown), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "200 OK" and first["resource"]["active"] is False
    assert second["response"]["status"].startswith("400")
    assert "application/merge-patch+json" in second["response"]["outcome"]["issue"][0]["diagnostics"]


@pytest.mark.parametrize("backend", ["sqlite"])  # MongoDB transactions need a replica set
async def test_merge_patch_and_a_patch_changing_nothing_in_a_transaction(client):
    created = await make_patient(client)
    url = f"Patient/{created['id']}"
    response = await client.post("/", json=bundle("transaction", {
        "resource": binary({"gender": None}), "request": {"method": "PATCH", "url": url}}), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["entry"][0]["response"]["etag"] == 'W/"2"'
    assert "gender" not in (await client.get(f"/{url}")).json()
    nothing = {"resourceType": "Parameters"}
    response = await client.post("/", json=bundle("transaction", {
        "resource": nothing, "request": {"method": "PATCH", "url": url}}), headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]
    assert entry["response"]["status"] == "200 OK" and entry["response"]["etag"] == 'W/"2"', entry
    assert entry["resource"]["meta"]["versionId"] == "2"
