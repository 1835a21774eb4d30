"""batch and transaction Bundles over HTTP: R4 order, placeholders and conditional references, atomicity,
bad input, batch independence, PATCH inside Bundles, and a Synthea patient loaded after its batch files."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from pathlib import Path
from typing import AsyncIterator

import httpx
import orjson
import pytest

from conftest import BASE, FHIR_JSON, SYNTHEA, make_store, synthea_bundle
from hearth.server.app import create_app
from hearth.server.settings import Settings

# Backends that commit several writes atomically: SQLite, and MongoDB when a real replica set is given.
TRANSACTIONAL = ["sqlite"] + (["mongo"] if os.environ.get("HEARTH_TEST_MONGODB_URL") else [])


class Server:
    def __init__(self, app, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    async def post(self, bundle: dict, **headers: str) -> httpx.Response:
        return await self.client.post("/", content=orjson.dumps(bundle), headers={**FHIR_JSON, **headers})

    async def count(self, resource_type: str | None = None) -> int:
        """Versions written (of one type), straight from the store: search-independent."""
        return (await self.app.ctx.store.history(resource_type, None, None, None, 1, total=True)).total

    async def read(self, reference: str) -> dict:
        response = await self.client.get(f"/{reference}")
        assert response.status_code == 200, response.text
        return response.json()


async def _server(backend: str, tmp_path: Path, **settings) -> AsyncIterator[Server]:
    app = create_app(Settings(storage=str(tmp_path / "h.db"), base_url=BASE, **settings),
                     make_store(backend, tmp_path))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield Server(app, client)
    finally:
        await app.shutdown()


@pytest.fixture(params=TRANSACTIONAL)
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    async for value in _server(request.param, tmp_path):
        yield value


@pytest.fixture
async def mongo_without_transactions(tmp_path: Path) -> AsyncIterator[Server]:
    os.environ.pop("HEARTH_TEST_MONGODB_URL", None)
    async for value in _server("mongo", tmp_path):
        yield value


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post(resource: dict, full_url: str | None = None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def organization(value: str) -> dict:
    return {"resourceType": "Organization", "identifier": [{"system": "http://org.test", "value": value}],
            "name": f"Org {value}"}


def observation(subject: str, **extra) -> dict:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
            "subject": {"reference": subject}, **extra}


def outcome_text(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return " ".join(issue["diagnostics"] + " " + " ".join(issue.get("expression", [])) for issue in body["issue"])


# --- transaction ---------------------------------------------------------------------------------------------

async def test_placeholders_and_conditional_references_are_rewritten(server):
    org = (await server.client.post("/Organization", json=organization("o1"), headers=FHIR_JSON)).json()
    patient_url = urn()
    by_identifier = "Organization?identifier=http://org.test|o1"
    patient = {"resourceType": "Patient", "managingOrganization": {"reference": by_identifier},
               "text": {"status": "generated",
                        "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><a href="{patient_url}">me</a></div>'}}
    obs = observation(patient_url, extension=[{"url": "http://example.org/about", "valueUri": patient_url}],
                      performer=[{"reference": by_identifier}])
    response = await server.post(tx(post(obs), post(patient, patient_url)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    obs_response, patient_response = (entry["response"] for entry in body["entry"])
    assert obs_response["status"] == "201 Created" and patient_response["status"] == "201 Created"
    for entry in body["entry"]:
        assert entry["response"]["etag"] == 'W/"1"' and entry["response"]["lastModified"]
    patient_ref = patient_response["location"].rsplit("/_history", 1)[0]
    assert patient_ref.startswith("Patient/") and body["entry"][1]["resource"]["id"] == patient_ref.split("/")[1]
    stored = await server.read(obs_response["location"].rsplit("/_history", 1)[0])
    assert stored["subject"]["reference"] == patient_ref
    assert stored["extension"][0]["valueUri"] == patient_ref
    assert stored["performer"][0]["reference"] == f"Organization/{org['id']}"
    stored_patient = await server.read(patient_ref)
    assert stored_patient["managingOrganization"]["reference"] == f"Organization/{org['id']}"
    assert f'href="{patient_ref}"' in stored_patient["text"]["div"]


async def test_references_to_posted_entries_with_restful_full_urls_follow_the_new_id(server):
    base = "http://example.org/fhir"
    patient = {"resourceType": "Patient", "id": "abc"}
    relative = observation("Patient/abc")
    absolute = observation(f"{base}/Patient/abc", performer=[{"reference": "Practitioner/elsewhere"}])
    response = await server.post(tx(post(patient, f"{base}/Patient/abc"),
                                    post(relative, f"{base}/Observation/o1"), post(absolute)))
    assert response.status_code == 200, response.text
    patient_entry, *observations = response.json()["entry"]
    new_ref = patient_entry["response"]["location"].rsplit("/_history", 1)[0]
    assert new_ref != "Patient/abc"
    stored = [await server.read(e["response"]["location"].rsplit("/_history", 1)[0]) for e in observations]
    assert [o["subject"]["reference"] for o in stored] == [new_ref, new_ref]
    assert stored[1]["performer"][0]["reference"] == "Practitioner/elsewhere"


async def test_processing_order_and_get_sees_the_writes(server):
    await server.client.put("/Patient/p-put", json={"resourceType": "Patient", "id": "p-put", "active": False},
                            headers=FHIR_JSON)
    await server.client.put("/Patient/p-del", json={"resourceType": "Patient", "id": "p-del"}, headers=FHIR_JSON)
    bundle = tx({"request": {"method": "GET", "url": "Patient/p-put"}},
                {"resource": {"resourceType": "Patient", "id": "p-put", "active": True},
                 "request": {"method": "PUT", "url": "Patient/p-put", "ifMatch": 'W/"1"'}},
                {"request": {"method": "DELETE", "url": "Patient/p-del"}},
                post({"resourceType": "Patient", "active": True}))
    response = await server.post(bundle)
    assert response.status_code == 200, response.text
    get, put, delete, create = response.json()["entry"]
    assert get["response"]["status"] == "200 OK" and get["resource"]["active"] is True
    assert get["resource"]["meta"]["versionId"] == "2"
    assert put["response"]["status"] == "200 OK" and put["response"]["etag"] == 'W/"2"'
    assert delete["response"]["status"] == "204 No Content"
    assert create["response"]["status"] == "201 Created"
    assert (await server.client.get("/Patient/p-del")).status_code == 410


async def test_if_none_exist_in_transaction_points_references_at_the_match(server):
    existing = (await server.client.post("/Organization", json=organization("o2"), headers=FHIR_JSON)).json()
    org_url = urn()
    bundle = tx(post(organization("o2"), org_url, ifNoneExist="identifier=http://org.test|o2"),
                post({"resourceType": "Patient", "managingOrganization": {"reference": org_url}}))
    response = await server.post(bundle)
    assert response.status_code == 200, response.text
    org_entry, patient_entry = response.json()["entry"]
    assert org_entry["response"]["status"] == "200 OK"
    patient = await server.read(patient_entry["response"]["location"].rsplit("/_history", 1)[0])
    assert patient["managingOrganization"]["reference"] == f"Organization/{existing['id']}"
    assert await server.count("Organization") == 1


async def test_the_same_if_none_exist_twice_in_one_transaction_makes_one_resource(server):
    first, second = urn(), urn()
    condition = "identifier=http://org.test|twice"
    response = await server.post(tx(post(organization("twice"), first, ifNoneExist=condition),
                                    post(organization("twice"), second, ifNoneExist=condition),
                                    post({"resourceType": "Patient", "managingOrganization": {"reference": second}})))
    assert response.status_code == 200, response.text
    org1, org2, patient_entry = response.json()["entry"]
    assert org1["response"]["status"] == "201 Created" and org2["response"]["status"] == "200 OK"
    assert org1["response"]["location"] == org2["response"]["location"]
    patient = await server.read(patient_entry["response"]["location"].rsplit("/_history", 1)[0])
    assert patient["managingOrganization"]["reference"] == org1["response"]["location"].rsplit("/_history", 1)[0]
    assert await server.count("Organization") == 1


async def test_conditional_update_and_delete_in_transaction(server):
    await server.client.post("/Organization", json=organization("o3"), headers=FHIR_JSON)
    await server.client.post("/Organization", json=organization("o4"), headers=FHIR_JSON)
    bundle = tx({"resource": {**organization("o3"), "name": "Renamed"},
                 "request": {"method": "PUT", "url": "Organization?identifier=http://org.test|o3"}},
                {"request": {"method": "DELETE", "url": "Organization?identifier=http://org.test|o4"}},
                {"resource": organization("o5"),
                 "request": {"method": "PUT", "url": "Organization?identifier=http://org.test|o5"}})
    response = await server.post(bundle)
    assert response.status_code == 200, response.text
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses == ["200 OK", "204 No Content", "201 Created"]
    renamed = await server.read(response.json()["entry"][0]["response"]["location"].rsplit("/_history", 1)[0])
    assert renamed["name"] == "Renamed"


async def test_patch_inside_transaction_and_batch(server):
    await server.client.put("/Patient/pp", json={"resourceType": "Patient", "id": "pp", "active": True},
                            headers=FHIR_JSON)
    json_patch = base64.b64encode(b'[{"op":"replace","path":"/active","value":false}]').decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": json_patch}
    response = await server.post(tx({"resource": binary, "request": {"method": "PATCH", "url": "Patient/pp"}}))
    assert response.status_code == 200, response.text
    assert (await server.read("Patient/pp"))["active"] is False
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "gender"}, {"name": "value", "valueCode": "female"}]}]}
    response = await server.post(tx({"resource": fhirpath, "request": {"method": "PATCH", "url": "Patient/pp"}},
                                    kind="batch"))
    assert response.json()["entry"][0]["response"]["status"] == "200 OK", response.text
    assert (await server.read("Patient/pp"))["gender"] == "female"


async def test_concurrent_transactions_with_the_same_if_none_exist_share_one_resource(server):
    async def one() -> str:
        org_url = urn()
        response = await server.post(tx(
            post(organization("shared"), org_url, ifNoneExist="identifier=http://org.test|shared"),
            post({"resourceType": "Patient", "managingOrganization": {"reference": org_url}})))
        assert response.status_code == 200, response.text
        location = response.json()["entry"][1]["response"]["location"].rsplit("/_history", 1)[0]
        return (await server.read(location))["managingOrganization"]["reference"]
    references = await asyncio.gather(*(one() for _ in range(10)))
    assert len(set(references)) == 1
    assert await server.count("Organization") == 1 and await server.count("Patient") == 10


# --- atomicity and bad input ---------------------------------------------------------------------------------

async def assert_refused(server: Server, bundle: dict, status: int, *fragments: str) -> None:
    before = await server.count()
    response = await server.post(bundle)
    assert response.status_code == status, response.text
    text = outcome_text(response)
    for fragment in fragments:
        assert fragment in text, text
    assert await server.count() == before, "a refused transaction left a trace"


async def test_failing_entry_leaves_no_trace(server):
    good = post({"resourceType": "Patient", "active": True}, urn())
    invalid = post({"resourceType": "Patient", "gender": 12})
    await assert_refused(server, tx(good, good | {"fullUrl": urn()}, invalid), 400, "Bundle.entry[2]", "gender")


async def test_version_conflict_at_commit_leaves_no_trace(server):
    await server.client.put("/Patient/v", json={"resourceType": "Patient", "id": "v"}, headers=FHIR_JSON)
    stale = {"resource": {"resourceType": "Patient", "id": "v", "active": True},
             "request": {"method": "PUT", "url": "Patient/v", "ifMatch": 'W/"7"'}}
    await assert_refused(server, tx(post({"resourceType": "Patient"}), stale), 412, "Bundle.entry[1]")


async def test_bad_input_is_refused_precisely(server):
    await server.client.post("/Organization", json=organization("dup"), headers=FHIR_JSON)
    await server.client.post("/Organization", json=organization("dup"), headers=FHIR_JSON)
    await server.client.put("/Patient/pt", json={"resourceType": "Patient", "id": "pt"}, headers=FHIR_JSON)
    dangling = urn()
    await assert_refused(server, tx(post(observation(dangling))), 400, "Bundle.entry[0]", dangling)
    same = urn()
    await assert_refused(server, tx(post({"resourceType": "Patient"}, same), post({"resourceType": "Patient"}, same)),
                         400, "Bundle.entry[1]", "fullUrl")
    await assert_refused(server, tx({"resource": {"resourceType": "Patient"},
                                     "request": {"method": "FETCH", "url": "Patient"}}), 400, "Bundle.entry[0]",
                         "FETCH")
    await assert_refused(server, tx({"resource": {"resourceType": "Patient"},
                                     "request": {"method": "POST", "url": "Patient/12"}}), 400, "Bundle.entry[0]")
    await assert_refused(server, tx(post(observation("Patient/pt")), post(observation(
        "Patient/pt", performer=[{"reference": "Organization?identifier=http://org.test|none"}]))),
        404, "Bundle.entry[1]", "matches no resource")
    await assert_refused(server, tx(post(observation(
        "Patient/pt", performer=[{"reference": "Organization?identifier=http://org.test|dup"}]))),
        412, "Bundle.entry[0]", "several")
    twice = {"resource": {"resourceType": "Patient", "id": "pt"}, "request": {"method": "PUT", "url": "Patient/pt"}}
    await assert_refused(server, tx(twice, {"request": {"method": "DELETE", "url": "Patient/pt"}}), 400,
                         "Patient/pt", "once")
    await assert_refused(server, tx({"resource": {"resourceType": "Patient", "id": "other"},
                                     "request": {"method": "PUT", "url": "Patient/pt"}}), 400, "Bundle.entry[0]")
    bad_patch = base64.b64encode(b'[{"op":"replace","path":"/gender","value":12}]').decode()
    await assert_refused(server, tx(post({"resourceType": "Patient"}), {
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": bad_patch},
        "request": {"method": "PATCH", "url": "Patient/pt"}}), 422, "Bundle.entry[1]")
    missing_path = base64.b64encode(b'[{"op":"remove","path":"/name/0"}]').decode()
    await assert_refused(server, tx({
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": missing_path},
        "request": {"method": "PATCH", "url": "Patient/pt"}}), 422, "Bundle.entry[0]", "/name/0")
    await assert_refused(server, tx(post({"resourceType": "Patient"}), {"request": {"method": "GET",
                                                                                    "url": "Patient/nobody"}}),
                         404, "Bundle.entry[1]")


async def test_not_a_batch_or_transaction(server):
    response = await server.post({"resourceType": "Bundle", "type": "collection", "entry": []})
    assert response.status_code == 400 and "batch or transaction" in outcome_text(response)
    response = await server.post({"resourceType": "Patient"})
    assert response.status_code == 400
    response = await server.client.post("/", content=b"{nope", headers=FHIR_JSON)
    assert response.status_code == 400


async def test_transaction_refused_without_database_transactions(mongo_without_transactions):
    server = mongo_without_transactions
    response = await server.post(tx(post({"resourceType": "Patient"}), post({"resourceType": "Patient"})))
    assert response.status_code == 501, response.text
    assert "nothing was written" in outcome_text(response)
    assert await server.count() == 0


# --- batch ---------------------------------------------------------------------------------------------------

async def test_batch_entries_are_independent(server):
    await server.client.put("/Patient/b1", json={"resourceType": "Patient", "id": "b1"}, headers=FHIR_JSON)
    await server.client.put("/Patient/gone", json={"resourceType": "Patient", "id": "gone"}, headers=FHIR_JSON)
    await server.client.delete("/Patient/gone")
    bundle = tx(post({"resourceType": "Patient", "active": True}),
                post({"resourceType": "Patient", "gender": 12}),
                {"request": {"method": "GET", "url": "Patient/b1"}},
                {"request": {"method": "GET", "url": "Patient/gone"}},
                {"request": {"method": "GET", "url": "Patient/b1/_history"}},
                {"request": {"method": "BREW", "url": "Patient"}},
                kind="batch")
    response = await server.post(bundle)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "batch-response"
    statuses = [entry["response"]["status"] for entry in body["entry"]]
    assert statuses == ["201 Created", "400 Bad Request", "200 OK", "410 Gone", "200 OK", "400 Bad Request"]
    assert body["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert body["entry"][2]["resource"]["id"] == "b1"
    assert body["entry"][4]["resource"]["type"] == "history"
    assert await server.count("Patient") == 4  # b1, gone (2 versions) and the one batch create


async def test_get_entries_search(server):
    await server.client.put("/Patient/s1", json={"resourceType": "Patient", "id": "s1", "name": [{"family": "Zed"}]},
                            headers=FHIR_JSON)
    for kind in ("batch", "transaction"):
        response = await server.post(tx(post({"resourceType": "Patient", "name": [{"family": "Zed"}]}),
                                        {"request": {"method": "GET", "url": "Patient?name=zed"}}, kind=kind))
        assert response.status_code == 200, response.text
        searchset = response.json()["entry"][1]["resource"]
        assert searchset["type"] == "searchset"
        assert sum(1 for e in searchset["entry"] if e["search"]["mode"] == "match") == (2 if kind == "batch" else 3)
    bad = await server.post(tx({"request": {"method": "GET", "url": "Patient?birthdate=not-a-date"}}, kind="batch"))
    assert bad.json()["entry"][0]["response"]["status"] == "400 Bad Request"


async def test_conditional_entries_in_a_batch(server):
    await server.client.post("/Organization", json=organization("b-o1"), headers=FHIR_JSON)
    await server.client.post("/Organization", json=organization("b-dup"), headers=FHIR_JSON)
    await server.client.post("/Organization", json=organization("b-dup"), headers=FHIR_JSON)
    patch = base64.b64encode(b'[{"op":"replace","path":"/name","value":"Patched"}]').decode()
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": patch}
    response = await server.post(tx(
        {"resource": binary, "request": {"method": "PATCH", "url": "Organization?identifier=http://org.test|b-o1"}},
        {"resource": binary, "request": {"method": "PATCH", "url": "Organization?identifier=http://org.test|b-dup"}},
        {"resource": organization("b-new"),
         "request": {"method": "PUT", "url": "Organization?identifier=http://org.test|b-new"}},
        {"request": {"method": "DELETE", "url": "Organization?identifier=http://org.test|b-dup"}},
        post(organization("b-o1"), ifNoneExist="identifier=http://org.test|b-o1"),
        kind="batch"))
    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses == ["200 OK", "412 Precondition Failed", "201 Created", "412 Precondition Failed", "200 OK"]
    patched = response.json()["entry"][0]["resource"]
    assert patched["name"] == "Patched" and patched["meta"]["versionId"] == "2"
    assert response.json()["entry"][4]["resource"]["id"] == patched["id"]


async def test_conditional_delete_of_several_in_a_transaction_follows_the_setting(tmp_path):
    async for server in _server("sqlite", tmp_path, conditional_delete_multiple=True):
        for _ in range(3):
            await server.client.post("/Organization", json=organization("many"), headers=FHIR_JSON)
        response = await server.post(tx({"request": {"method": "DELETE",
                                                      "url": "Organization?identifier=http://org.test|many"}},
                                        post({"resourceType": "Patient"})))
        assert response.status_code == 200, response.text
        assert response.json()["entry"][0]["response"]["status"] == "204 No Content"
        assert await server.count("Organization") == 6  # 3 versions, 3 tombstones


async def test_batch_on_mongo_without_transactions(mongo_without_transactions):
    server = mongo_without_transactions
    response = await server.post(tx(post({"resourceType": "Patient"}), post({"resourceType": "Patient"}),
                                    kind="batch"))
    assert [e["response"]["status"] for e in response.json()["entry"]] == ["201 Created", "201 Created"]


async def test_prefer_minimal_leaves_resources_out(server):
    response = await server.post(tx(post({"resourceType": "Patient"})), Prefer="return=minimal")
    entry = response.json()["entry"][0]
    assert "resource" not in entry and entry["response"]["status"] == "201 Created"


# --- Synthea -----------------------------------------------------------------------------------------------

async def test_synthea_batch_files_then_a_patient_transaction(server):
    for prefix in ("0-hospitalInformation", "0-practitionerInformation"):
        batch = synthea_bundle(prefix)
        response = await server.post(batch, Prefer="return=minimal")
        assert response.status_code == 200
        statuses = {entry["response"]["status"] for entry in response.json()["entry"]}
        assert statuses <= {"201 Created", "200 OK"}, statuses
    organizations = await server.count("Organization")
    assert organizations > 0 and await server.count("Practitioner") > 0
    patient_file = next(path for path in sorted(SYNTHEA.glob("*.json.bz2")) if not path.name.startswith("0-"))
    bundle = synthea_bundle(patient_file.name.split(".")[0])
    expected: dict[str, int] = {}
    for entry in bundle["entry"]:
        expected[entry["resource"]["resourceType"]] = expected.get(entry["resource"]["resourceType"], 0) + 1
    before = {resource_type: await server.count(resource_type) for resource_type in expected}
    response = await server.post(bundle, Prefer="return=minimal")
    assert response.status_code == 200, response.text[:2000]
    locations = [entry["response"]["location"].rsplit("/_history", 1)[0] for entry in response.json()["entry"]]
    assert len(locations) == len(bundle["entry"]) and expected["Patient"] == 1
    for resource_type, number in expected.items():
        assert await server.count(resource_type) == before[resource_type] + number, resource_type
    # every reference in the stored resources is now Type/id of a stored resource
    known = set(locations)
    for location in locations[:80]:
        resource = await server.read(location)
        for reference in _references(resource):
            assert not reference.startswith("urn:") and "?" not in reference, reference
            if reference.split("/")[0] in ("Patient", "Encounter", "Claim"):
                assert reference in known, reference
            else:
                assert (await server.client.get(f"/{reference}")).status_code == 200, reference


def _references(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for key, item in value.items() if key != "reference" for r in _references(item)]
    if isinstance(value, list):
        return [r for item in value for r in _references(item)]
    return []


# --- finding references to rewrite (no server) --------------------------------------------------------------

def test_find_links_is_typed():
    from hearth.interactions.references import find_links
    placeholder = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"
    resource = {
        "resourceType": "DocumentReference", "status": "current",
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": placeholder},  # a string: left alone
        "subject": {"reference": placeholder},
        "author": [{"reference": "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1"},
                   {"reference": "Practitioner/123"}],
        "content": [{"attachment": {"url": placeholder}}],
        "contained": [{"resourceType": "Patient", "id": "c", "generalPractitioner": [{"reference": placeholder}]}],
        "extension": [{"url": "http://example.org/x", "valueReference": {"reference": placeholder}}],
    }
    found = {(link.path, link.kind) for link in find_links(resource)}
    assert found == {
        ("DocumentReference.subject.reference", "reference"),
        ("DocumentReference.author[0].reference", "reference"),
        ("DocumentReference.content[0].attachment.url", "uri"),
        ("DocumentReference.contained[0].generalPractitioner[0].reference", "reference"),
        ("DocumentReference.extension[0].valueReference.reference", "reference"),
    }


async def test_capability_statement_tells_what_works(server, mongo_without_transactions):
    statement = (await server.client.get("/metadata")).json()
    rest = statement["rest"][0]
    assert {"transaction", "batch"} <= {i["code"] for i in rest["interaction"]}
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert "patch" in {i["code"] for i in patient["interaction"]}
    assert patient["conditionalCreate"] and patient["conditionalUpdate"] and patient["conditionalDelete"] == "single"
    assert set(statement["patchFormat"]) == {"application/json-patch+json", "application/merge-patch+json",
                                             "application/fhir+json"}
    without = (await mongo_without_transactions.client.get("/metadata")).json()["rest"][0]
    assert {i["code"] for i in without["interaction"]} >= {"batch"}
    assert "transaction" not in {i["code"] for i in without["interaction"]}


def test_find_links_leaves_a_stored_bundles_own_entries_alone():
    from hearth.interactions.references import find_links
    inner = "urn:uuid:5e0a3c50-49c4-4c54-9a5c-0b5d2bb5e7a1"
    document = {"resourceType": "Bundle", "type": "document", "entry": [
        {"fullUrl": inner, "resource": {"resourceType": "Patient"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": inner}}}]}
    assert find_links(document) == []


async def test_keep_unchanged_leaves_equal_content_without_a_new_version(server):
    """What connectors ask (not reachable over REST): a transaction whose PUT says what is stored writes nothing
    for that entry, and tells so; the other entries are written as usual."""
    from hearth.interactions.dispatcher import dispatch
    from hearth.interactions.request import Request

    def bundle(city: str) -> dict:
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "same", "active": True},
             "request": {"method": "PUT", "url": "Patient/same"}},
            {"resource": {"resourceType": "Patient", "id": "moves", "address": [{"city": city}]},
             "request": {"method": "PUT", "url": "Patient/moves"}}]}
    ctx = server.app.ctx
    await dispatch(ctx, Request("transaction", body=bundle("Ghent"), keep_unchanged=True))
    outcome = await dispatch(ctx, Request("transaction", body=bundle("Bruges"), keep_unchanged=True))
    assert [(r.unchanged, r.version.version_id) for r in outcome.entries] == [(True, 1), (False, 2)]
    assert (await server.read("Patient/same"))["meta"]["versionId"] == "1"
    plain = await dispatch(ctx, Request("transaction", body=bundle("Bruges")))  # without: a version each
    assert [r.version.version_id for r in plain.entries] == [2, 3]
