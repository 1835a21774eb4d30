"""$reindex and $expunge over HTTP on both backends: what they change, their bounds, and who may run them."""

from __future__ import annotations

import httpx

import security_helpers
from conftest import FHIR_JSON

secured = security_helpers.secured  # the fixture: a server requiring tokens

EYE = "http://example.org/fhir/StructureDefinition/eye-colour"


def flags(**values: object) -> dict:
    return {"resourceType": "Parameters", "parameter": [
        {"name": name, "valueBoolean" if isinstance(value, bool) else "valueInteger": value}
        for name, value in values.items()]}


async def expunge(client: httpx.AsyncClient, path: str = "", headers: dict | None = None, **values: object) -> int:
    response = await client.post(f"{path}/$expunge", json=flags(**values), headers={**FHIR_JSON, **(headers or {})})
    assert response.status_code == 200, response.text
    parameter, = response.json()["parameter"]
    assert parameter["name"] == "count"
    return parameter["valueInteger"]


async def put(client: httpx.AsyncClient, resource_type: str, resource_id: str, family: str) -> None:
    resource = {"resourceType": resource_type, "id": resource_id, "name": [{"family": family}]}
    response = await client.put(f"/{resource_type}/{resource_id}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text


def history_versions(bundle: dict) -> list[str]:
    return [e["response"]["etag"] for e in bundle.get("entry", [])]


async def test_expunge_previous_versions_of_one_resource(client):
    for family in ("One", "Two", "Three"):
        await put(client, "Patient", "p", family)
    await put(client, "Patient", "other", "Kept")
    await put(client, "Patient", "other", "Kept too")
    assert await expunge(client, "/Patient/p", expungePreviousVersions=True) == 2
    assert (await client.get("/Patient/p/_history/1")).status_code == 404
    assert (await client.get("/Patient/p/_history/2")).status_code == 404
    current = await client.get("/Patient/p")
    assert current.status_code == 200 and current.json()["name"][0]["family"] == "Three"
    assert history_versions((await client.get("/Patient/p/_history")).json()) == ['W/"3"']
    assert (await client.get("/Patient/other/_history/1")).status_code == 200  # another resource: untouched
    await put(client, "Patient", "p", "Four")  # versions go on from the current one
    assert (await client.get("/Patient/p")).json()["meta"]["versionId"] == "4"


async def test_expunge_deleted_resources_of_a_type(client):
    await put(client, "Patient", "gone", "Gone")
    await put(client, "Patient", "kept", "Kept")
    await put(client, "Practitioner", "deleted-too", "Other type")
    for path in ("/Patient/gone", "/Practitioner/deleted-too"):
        assert (await client.delete(path)).status_code == 204
    assert (await client.get("/Patient/gone")).status_code == 410
    assert await expunge(client, "/Patient", expungeDeletedResources=True) == 2  # its create and its delete
    assert (await client.get("/Patient/gone")).status_code == 404  # as if it never existed
    assert (await client.get("/Patient/gone/_history/1")).status_code == 404
    assert history_versions((await client.get("/Patient/_history")).json()) == ['W/"1"']  # only `kept`
    search = (await client.get("/Patient", params={"_id": "gone,kept"})).json()
    assert [e["resource"]["id"] for e in search["entry"]] == ["kept"]
    assert (await client.get("/Practitioner/deleted-too")).status_code == 410  # another type: untouched
    await put(client, "Patient", "gone", "Back")  # the id can be used again, from version 1
    again = await client.get("/Patient/gone")
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "1"


async def test_expunge_is_bounded_by_limit_and_needs_a_choice(client):
    for resource_id in ("a", "b", "c"):
        await put(client, "Patient", resource_id, "First")
        await put(client, "Patient", resource_id, "Second")
    assert await expunge(client, expungePreviousVersions=True, limit=2) == 2
    assert await expunge(client, expungePreviousVersions=True, limit=2) == 1
    assert await expunge(client, expungePreviousVersions=True, limit=2) == 0
    assert all([(await client.get(f"/Patient/{i}")).status_code == 200 for i in "abc"])
    refused = await client.post("/$expunge", json=flags(), headers=FHIR_JSON)
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"
    too_many = await client.post("/$expunge", json=flags(expungePreviousVersions=True, limit=10**6), headers=FHIR_JSON)
    assert too_many.status_code == 400 and "expunge limit" in too_many.text
    # removing everything: not from a URL, and not anonymously
    in_url = await client.post("/$expunge", params={"expungeEverything": "true"}, json=flags(), headers=FHIR_JSON)
    assert in_url.status_code == 400
    anonymous = await client.post("/$expunge", json=flags(expungeEverything=True), headers=FHIR_JSON)
    assert anonymous.status_code == 403
    assert (await client.get("/Patient/a")).status_code == 200


async def test_reindex_makes_existing_resources_findable(app, client):
    for resource_id, colour in (("brown-eyed", "brown"), ("blue-eyed", "blue")):
        resource = {"resourceType": "Patient", "id": resource_id, "extension": [{"url": EYE, "valueCode": colour}]}
        assert (await client.put(f"/Patient/{resource_id}", json=resource, headers=FHIR_JSON)).status_code == 201
    # registered behind the write path's back (as a changed extraction after an upgrade would be): nothing indexed
    app.ctx.registry.register({
        "resourceType": "SearchParameter", "url": "http://example.org/fhir/SearchParameter/eye", "name": "eye",
        "status": "active", "code": "eye", "base": ["Patient"], "type": "token",
        "expression": f"Patient.extension('{EYE}').value"})
    assert "entry" not in (await client.get("/Patient", params={"eye": "brown"})).json()
    response = await client.post("/Patient/$reindex", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["parameter"] == [{"name": "count", "valueInteger": 2}]
    found = (await client.get("/Patient", params={"eye": "brown"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["brown-eyed"]
    one = await client.get("/Patient/blue-eyed/$reindex")
    assert one.json()["parameter"] == [{"name": "count", "valueInteger": 1}]
    assert (await client.get("/Patient/nobody/$reindex")).status_code == 404


async def test_admin_operations_need_the_admin_role(secured):
    client = secured.client
    reader = await secured.token("system/*.cruds", name="not-admin")
    for path in ("/$expunge", "/Patient/$expunge", "/Patient/p1/$expunge", "/Patient/$reindex",
                 "/$reindex-status"):
        refused = await client.post(path, json=flags(expungePreviousVersions=True), headers={**FHIR_JSON, **reader})
        assert refused.status_code == 403, (path, refused.text)
    admin = await secured.token("user/*.cruds", name="admin-app", role="admin")
    assert (await client.get("/Patient/p1", headers=admin)).status_code == 200
    assert await expunge(client, headers=admin, expungeEverything=True) > 0
    assert (await client.get("/Patient/p1", headers=admin)).status_code == 404
    empty = (await client.get("/Observation", headers=admin)).json()
    assert empty["total"] == 0 if "total" in empty else "entry" not in empty
    events = (await client.get("/AuditEvent", headers=admin)).json()  # the audit trail kept it
    assert any("$expunge" in str(e["resource"]) for e in events.get("entry", []))
