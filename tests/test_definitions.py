"""SearchParameter, ValueSet and CodeSystem resources take effect when written, and again after a restart."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from conftest import BASE, FHIR_JSON, make_store
from subscription_helpers import wait_until
from hearth.server.app import create_app
from hearth.server.settings import Settings

EYE = "http://example.org/fhir/StructureDefinition/eye-colour"


def eye_patient(pid: str, colour: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "extension": [{"url": EYE, "valueCode": colour}]}


def search_parameter(code: str, expression: str = f"Patient.extension('{EYE}').value") -> dict:
    return {"resourceType": "SearchParameter", "url": f"http://example.org/fhir/SearchParameter/{code}",
            "name": code, "status": "active", "description": "eye colour", "code": code, "base": ["Patient"],
            "type": "token", "expression": expression}


async def put(client, resource: dict) -> httpx.Response:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    return response


def found(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def _values(parts: list[dict]) -> dict[str, Any]:
    """A `part` list as name -> value (repeated names: a list; nested parts: a dict of theirs)."""
    values: dict[str, Any] = {}
    for part in parts:
        value = _values(part["part"]) if "part" in part else next(v for k, v in part.items() if k.startswith("value"))
        if part["name"] in ("type", "waiting"):
            values.setdefault(part["name"], []).append(value)
        else:
            values[part["name"]] = value
    return values


async def job_status(client, url: str) -> list[dict[str, Any]]:
    """The re-index jobs of the parameter `url` as `$reindex-status` shows them (each its parts by name), oldest
    version first."""
    response = await client.get("/$reindex-status", params={"url": url})
    assert response.status_code == 200, response.text
    jobs = [_values(p["part"]) for p in response.json().get("parameter", [])]
    return sorted(jobs, key=lambda job: int(job["searchParameter"]["reference"].rpartition("/")[2]))


async def reindexed(app, client, url: str) -> dict[str, Any]:
    """Step `app`'s re-index worker until the job of the parameter `url`'s current version is done; its status."""
    async def done() -> bool:
        await app.reindexer.step()
        return (await job_status(client, url))[-1]["state"] == "done"
    await wait_until(done, f"the re-index job of {url}")
    return (await job_status(client, url))[-1]


async def test_custom_search_parameter_indexes_existing_and_new_resources(app, client):
    code = f"eye{uuid.uuid4().hex[:8]}"
    await put(client, eye_patient("blue1", "blue"))
    await put(client, eye_patient("brown1", "brown"))
    strict = {"Prefer": "handling=strict"}
    assert (await client.get(f"/Patient?{code}=blue", headers=strict)).status_code == 400  # not known yet
    created = await client.post("/SearchParameter", json=search_parameter(code), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    await reindexed(app, client, search_parameter(code)["url"])
    assert found((await client.get(f"/Patient?{code}=blue", headers=strict)).json()) == {"blue1"}
    await put(client, eye_patient("blue2", "blue"))
    assert found((await client.get(f"/Patient?{code}=blue")).json()) == {"blue1", "blue2"}
    statement = (await client.get("/metadata")).json()
    patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    assert code in {p["name"] for p in patient["searchParam"]}
    assert (await client.delete(f"/SearchParameter/{created.json()['id']}")).status_code == 204
    assert (await client.get(f"/Patient?{code}=blue", headers=strict)).status_code == 400


async def test_search_parameter_that_cannot_be_indexed_is_refused(client):
    code = f"bad{uuid.uuid4().hex[:8]}"
    refused = await client.post("/SearchParameter", json=search_parameter(code, "Patient.name.substring(1, 2)"),
                                headers=FHIR_JSON)
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"
    taken = await client.post("/SearchParameter", json={**search_parameter("gender"), "url": "http://x.org/g"},
                              headers=FHIR_JSON)
    assert taken.status_code == 400  # Patient already has `gender`
    assert (await client.get("/SearchParameter")).json().get("entry", []) == []


async def test_stored_valueset_drives_code_in(client):
    url = f"http://example.org/fhir/ValueSet/{uuid.uuid4().hex[:8]}"
    await put(client, {"resourceType": "Observation", "id": "hr", "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})
    await put(client, {"resourceType": "Observation", "id": "rr", "status": "final",
                       "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1"}]}})
    unknown = await client.get(f"/Observation?code:in={url}")
    assert unknown.status_code == 400  # an unknown ValueSet
    valueset = {"resourceType": "ValueSet", "id": "vs", "url": url, "status": "active", "compose": {"include": [
        {"system": "http://loinc.org", "concept": [{"code": "8867-4"}]}]}}
    await put(client, valueset)
    assert found((await client.get(f"/Observation?code:in={url}")).json()) == {"hr"}
    assert found((await client.get(f"/Observation?code:not-in={url}")).json()) == {"rr"}


async def test_definitions_are_loaded_again_at_start_up(backend, tmp_path):
    code = f"eye{uuid.uuid4().hex[:8]}"
    store = make_store(backend, tmp_path)
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE)
    app = create_app(settings, store)
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        await put(client, eye_patient("g1", "green"))
        assert (await client.post("/SearchParameter", json=search_parameter(code), headers=FHIR_JSON)).status_code == 201
    app.ctx.registry.unregister(search_parameter(code)["url"])  # forget it, as a new process would
    if backend == "sqlite":
        await app.shutdown()
        store = None  # a new SqliteStore on the same file
    else:
        app.ctx = None  # keep the (in-memory) database; start afresh on it
    again = create_app(settings, store)
    await again.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=again), base_url=BASE) as client:
        await reindexed(again, client, search_parameter(code)["url"])
        response = await client.get(f"/Patient?{code}=green", headers={"Prefer": "handling=strict"})
        assert response.status_code == 200 and found(response.json()) == {"g1"}
    await again.shutdown()
