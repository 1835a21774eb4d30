"""create, read, vread, update, delete and conditional read over HTTP, on both backends."""

from __future__ import annotations

import asyncio

from conftest import BASE, FHIR_JSON

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
           "gender": "male", "birthDate": "1974-12-25"}


async def create(client, resource, **headers):
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers={**FHIR_JSON, **headers})
    assert response.status_code == 201, response.text
    return response


async def test_create_assigns_id_and_version(client):
    response = await create(client, PATIENT)
    body = response.json()
    assert body["id"] and body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"{BASE}/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


async def test_create_ignores_client_id(client):
    body = (await create(client, {**PATIENT, "id": "mine"})).json()
    assert body["id"] != "mine"


async def test_read_returns_stored_bytes(client):
    created = await create(client, PATIENT)
    read = await client.get(f"/Patient/{created.json()['id']}")
    assert read.status_code == 200
    assert read.content == created.content
    assert read.headers["etag"] == 'W/"1"'


async def test_decimals_and_primitive_extensions_kept_exactly(client):
    observation = {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "valueQuantity": {"value": 72.50, "unit": "kg"},
    }
    raw = (b'{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org",'
           b'"code":"29463-7"}]},"valueQuantity":{"value":72.50,"unit":"kg","system":"http://unitsofmeasure.org",'
           b'"code":"kg"},"component":[{"code":{"text":"x"},"valueQuantity":{"value":0.000100}}]}')
    response = await client.post("/Observation", content=raw, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    read = await client.get(f"/Observation/{response.json()['id']}")
    assert b'"value":72.50' in read.content and b'"value":0.000100' in read.content
    patient = {**PATIENT, "_birthDate": {"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "name": [{"family": "X", "given": ["A", "B"], "_given": [None, {"extension": [
            {"url": "http://example.org/nick", "valueString": "bee"}]}]}]}
    created = (await create(client, patient)).json()
    assert created["_birthDate"] == patient["_birthDate"]
    assert created["name"][0]["_given"] == [None, {"extension": [{"url": "http://example.org/nick", "valueString": "bee"}]}]
    assert observation["valueQuantity"]["value"] == 72.5  # (the test's own dict: JSON floats lose the zero)


async def test_update_versions_and_vread(client):
    created = (await create(client, PATIENT)).json()
    pid = created["id"]
    updated = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid, "gender": "other"}, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2" and updated.headers["etag"] == 'W/"2"'
    assert updated.headers["location"].endswith(f"/Patient/{pid}/_history/2")
    first = await client.get(f"/Patient/{pid}/_history/1")
    assert first.status_code == 200 and first.json()["gender"] == "male"
    assert (await client.get(f"/Patient/{pid}/_history/2")).json()["gender"] == "other"
    assert (await client.get(f"/Patient/{pid}/_history/3")).status_code == 404
    assert (await client.get(f"/Patient/{pid}/_history/x")).status_code == 404


async def test_update_as_create_with_client_id(client):
    response = await client.put("/Patient/pat-1", json={**PATIENT, "id": "pat-1"}, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.json()["meta"]["versionId"] == "1"
    assert response.headers["location"].endswith("/Patient/pat-1/_history/1")


async def test_if_match(client):
    await client.put("/Patient/m1", json={**PATIENT, "id": "m1"}, headers=FHIR_JSON)
    stale = await client.put("/Patient/m1", json={**PATIENT, "id": "m1"}, headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    fresh = await client.put("/Patient/m1", json={**PATIENT, "id": "m1"}, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200 and fresh.headers["etag"] == 'W/"2"'
    missing = await client.put("/Patient/m2", json={**PATIENT, "id": "m2"}, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert missing.status_code == 412
    assert (await client.get("/Patient/m2")).status_code == 404


async def test_concurrent_if_match_updates_one_wins(client):
    await client.put("/Patient/race", json={**PATIENT, "id": "race"}, headers=FHIR_JSON)

    async def attempt(n: int):
        return await client.put("/Patient/race", json={**PATIENT, "id": "race", "gender": ["male", "female"][n % 2]},
                                headers={**FHIR_JSON, "If-Match": 'W/"1"'})

    results = await asyncio.gather(*(attempt(n) for n in range(12)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 1 and statuses.count(412) == 11
    history = (await client.get("/Patient/race/_history")).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]


async def test_concurrent_unconditional_updates_lose_no_version(client):
    await client.put("/Patient/busy", json={**PATIENT, "id": "busy"}, headers=FHIR_JSON)
    results = await asyncio.gather(*(client.put("/Patient/busy", json={**PATIENT, "id": "busy"}, headers=FHIR_JSON)
                                     for _ in range(10)))
    assert all(r.status_code == 200 for r in results)
    assert sorted(int(r.json()["meta"]["versionId"]) for r in results) == list(range(2, 12))
    assert (await client.get("/Patient/busy/_history")).json()["total"] == 11


async def test_delete_then_read_is_gone_and_recreate(client):
    created = (await create(client, PATIENT)).json()
    pid = created["id"]
    deleted = await client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    gone = await client.get(f"/Patient/{pid}")
    assert gone.status_code == 410 and gone.json()["resourceType"] == "OperationOutcome"
    assert (await client.delete(f"/Patient/{pid}")).status_code == 204  # deleting again changes nothing
    assert (await client.get(f"/Patient/{pid}/_history/1")).status_code == 200
    assert (await client.get(f"/Patient/{pid}/_history/2")).status_code == 410
    again = await client.put(f"/Patient/{pid}", json={**PATIENT, "id": pid}, headers=FHIR_JSON)
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"
    assert (await client.delete("/Patient/never-was")).status_code == 204


async def test_conditional_read(client):
    created = await create(client, PATIENT)
    pid = created.json()["id"]
    same = await client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'})
    assert same.status_code == 304 and same.content == b""
    other = await client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"0"'})
    assert other.status_code == 200
    later = await client.get(f"/Patient/{pid}", headers={"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
    assert later.status_code == 304
    earlier = await client.get(f"/Patient/{pid}", headers={"If-Modified-Since": "Fri, 01 Jan 2010 00:00:00 GMT"})
    assert earlier.status_code == 200


async def test_prefer_return(client):
    minimal = await create(client, PATIENT, Prefer="return=minimal")
    assert minimal.content == b"" and minimal.headers["location"]
    outcome = await create(client, PATIENT, Prefer="return=OperationOutcome")
    assert outcome.json()["resourceType"] == "OperationOutcome"
    full = await create(client, PATIENT, Prefer="return=representation")
    assert full.json()["resourceType"] == "Patient"


async def test_pretty_summary_elements(client):
    pid = (await create(client, {**PATIENT, "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
                                 "contact": [{"name": {"family": "Y"}}]})).json()["id"]
    pretty = await client.get(f"/Patient/{pid}?_pretty=true")
    assert b"\n  " in pretty.content
    summary = (await client.get(f"/Patient/{pid}?_summary=true")).json()
    assert "contact" not in summary and "text" not in summary and summary["name"]
    assert any(tag["code"] == "SUBSETTED" for tag in summary["meta"]["tag"])
    data = (await client.get(f"/Patient/{pid}?_summary=data")).json()
    assert "text" not in data and "contact" in data
    text = (await client.get(f"/Patient/{pid}?_summary=text")).json()
    assert "text" in text and "name" not in text
    elements = (await client.get(f"/Patient/{pid}?_elements=gender")).json()
    assert set(elements) == {"resourceType", "id", "meta", "gender"}
    assert (await client.get(f"/Patient/{pid}?_summary=bogus")).status_code == 400
