"""Conditional create, update and delete over HTTP with the R4 status codes, and their race safety."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import orjson

from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings


def patient(mrn: str, family: str = "Chalmers", **extra) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "http://hospital.test/mrn", "value": mrn}],
            "name": [{"family": family}], **extra}


def mrn_criteria(mrn: str) -> str:
    return f"identifier=http://hospital.test/mrn|{mrn}"


async def count(app, criteria: str) -> int:
    """How many current Patients have the MRN in `criteria`, from the store's history (search-independent)."""
    page = await app.ctx.store.history("Patient", None, None, None, 10_000)
    current: dict[str, bytes] = {}
    for _, version in page.entries:  # newest first: the first seen of each id is its current version
        current.setdefault(version.id, version.body)
    mrn = criteria.rpartition("|")[2]
    return sum(1 for body in current.values() if body and orjson.loads(body)["identifier"][0]["value"] == mrn)


async def test_conditional_create_statuses(app, client):
    first = await client.post("/Patient", json=patient("1"), headers={**FHIR_JSON, "If-None-Exist": mrn_criteria("1")})
    assert first.status_code == 201, first.text
    again = await client.post("/Patient", json=patient("1", "Other"),
                              headers={**FHIR_JSON, "If-None-Exist": mrn_criteria("1")})
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["name"][0]["family"] == "Chalmers"
    # two resources now match: 412, and nothing is created
    await client.post("/Patient", json=patient("1"), headers=FHIR_JSON)
    several = await client.post("/Patient", json=patient("1"),
                                headers={**FHIR_JSON, "If-None-Exist": f"Patient?{mrn_criteria('1')}"})
    assert several.status_code == 412, several.text
    assert several.json()["resourceType"] == "OperationOutcome"
    assert await count(app, mrn_criteria("1")) == 2


async def test_conditional_create_with_unknown_parameter_is_400(app, client):
    response = await client.post("/Patient", json=patient("2"), headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"})
    assert response.status_code == 400, response.text
    assert await count(app, mrn_criteria("2")) == 0


async def test_conditional_update_statuses(client):
    created = await client.put(f"/Patient?{mrn_criteria('7')}", json=patient("7"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    resource_id = created.json()["id"]
    updated = await client.put(f"/Patient?{mrn_criteria('7')}", json=patient("7", "Second"), headers=FHIR_JSON)
    assert updated.status_code == 200, updated.text
    assert updated.json()["id"] == resource_id and updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put(f"/Patient?{mrn_criteria('7')}", json=patient("7", id="someone-else"),
                                headers=FHIR_JSON)
    assert wrong_id.status_code == 400, wrong_id.text
    stale = await client.put(f"/Patient?{mrn_criteria('7')}", json=patient("7"),
                             headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412, stale.text
    await client.post("/Patient", json=patient("7"), headers=FHIR_JSON)
    several = await client.put(f"/Patient?{mrn_criteria('7')}", json=patient("7"), headers=FHIR_JSON)
    assert several.status_code == 412, several.text
    read = await client.get(f"/Patient/{resource_id}")
    assert read.json()["meta"]["versionId"] == "2"


async def test_conditional_update_creates_at_body_id(client):
    response = await client.put(f"/Patient?{mrn_criteria('8')}", json=patient("8", id="chosen-8"), headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    assert response.json()["id"] == "chosen-8"


async def test_conditional_delete_statuses(app, client):
    nothing = await client.delete(f"/Patient?{mrn_criteria('9')}")
    assert nothing.status_code == 204
    one = (await client.post("/Patient", json=patient("9"), headers=FHIR_JSON)).json()
    deleted = await client.delete(f"/Patient?{mrn_criteria('9')}")
    assert deleted.status_code == 204 and deleted.headers["etag"] == 'W/"2"'
    assert (await client.get(f"/Patient/{one['id']}")).status_code == 410
    await client.post("/Patient", json=patient("9"), headers=FHIR_JSON)
    await client.post("/Patient", json=patient("9"), headers=FHIR_JSON)
    several = await client.delete(f"/Patient?{mrn_criteria('9')}")
    assert several.status_code == 412, several.text
    assert await count(app, mrn_criteria("9")) == 2


async def test_conditional_delete_multiple_behind_setting(tmp_path):
    settings = Settings(storage=str(tmp_path / "h.db"), base_url=BASE, conditional_delete_multiple=True)
    application = create_app(settings, make_store("sqlite", tmp_path))
    await application.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url=BASE) as client:
            for _ in range(3):
                await client.post("/Patient", json=patient("10"), headers=FHIR_JSON)
            await client.post("/Patient", json=patient("11"), headers=FHIR_JSON)
            response = await client.delete(f"/Patient?{mrn_criteria('10')}")
            assert response.status_code == 204, response.text
            assert await count(application, mrn_criteria("10")) == 0
            assert await count(application, mrn_criteria("11")) == 1
    finally:
        await application.shutdown()


async def test_conditional_delete_multiple_setting_from_environment():
    assert Settings.from_env({"HEARTH_CONDITIONAL_DELETE_MULTIPLE": "true"}).conditional_delete_multiple
    assert not Settings.from_env({}).conditional_delete_multiple


async def test_twenty_concurrent_conditional_creates_make_one(app, client):
    """The race every anchor server loses: 20 clients, same criteria, at once -> exactly one resource."""
    mrn = uuid.uuid4().hex
    headers = {**FHIR_JSON, "If-None-Exist": mrn_criteria(mrn)}
    responses = await asyncio.gather(*(client.post("/Patient", json=patient(mrn), headers=headers)
                                       for _ in range(20)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] * 19 + [201], [r.text for r in responses if r.status_code not in (200, 201)]
    assert len({response.json()["id"] for response in responses}) == 1
    assert await count(app, mrn_criteria(mrn)) == 1


async def test_twenty_concurrent_conditional_updates_make_one(app, client):
    mrn = uuid.uuid4().hex
    responses = await asyncio.gather(*(client.put(f"/Patient?{mrn_criteria(mrn)}", json=patient(mrn),
                                                  headers=FHIR_JSON) for _ in range(20)))
    assert sorted(r.status_code for r in responses) == [200] * 19 + [201]
    assert len({response.json()["id"] for response in responses}) == 1
    assert await count(app, mrn_criteria(mrn)) == 1
