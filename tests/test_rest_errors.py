"""Bad input: each gets its status and an OperationOutcome, and nothing is written."""

from __future__ import annotations

import pytest

from conftest import FHIR_JSON

PATIENT = {"resourceType": "Patient", "gender": "female"}


def outcome(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]
    return body


async def nothing_written(client) -> None:
    history = (await client.get("/_history")).json()
    assert history["total"] == 0 and history.get("entry", []) == []


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1,2]", b'"text"', b'{"resourceType": "Patient",}',
                                  b'{"resourceType":"Patient","gender":NaN}', b"\xff\xfe"])
async def test_malformed_json(client, body):
    outcome(await client.post("/Patient", content=body, headers=FHIR_JSON), 400)
    await nothing_written(client)


async def test_body_over_limit(client):
    huge = b'{"resourceType":"Patient","id":"x","text":{"status":"generated","div":"<div>' + b"a" * 2_000_000 + b'</div>"}}'
    outcome(await client.post("/Patient", content=huge, headers=FHIR_JSON), 413)
    outcome(await client.put("/Patient/x", content=huge, headers=FHIR_JSON), 413)
    await nothing_written(client)


async def test_wrong_resource_type_for_url(client):
    body = outcome(await client.post("/Observation", json=PATIENT, headers=FHIR_JSON), 400)
    assert body["issue"][0]["expression"] == ["resourceType"]
    await nothing_written(client)


async def test_id_in_body_differs_from_url(client):
    body = outcome(await client.put("/Patient/a", json={**PATIENT, "id": "b"}, headers=FHIR_JSON), 400)
    assert body["issue"][0]["expression"] == ["Patient.id"]
    outcome(await client.put("/Patient/a", json=PATIENT, headers=FHIR_JSON), 400)
    await nothing_written(client)


async def test_unknown_type(client):
    outcome(await client.post("/Bogus", json={"resourceType": "Bogus"}, headers=FHIR_JSON), 404)
    outcome(await client.get("/Bogus/1"), 404)
    # R4B-only types are unknown to an R4 server
    outcome(await client.post("/SubscriptionTopic", json={"resourceType": "SubscriptionTopic"}, headers=FHIR_JSON), 404)
    await nothing_written(client)


async def test_invalid_ids(client):
    outcome(await client.put("/Patient/bad_id!", json={**PATIENT, "id": "bad_id!"}, headers=FHIR_JSON), 400)
    outcome(await client.put("/Patient/" + "a" * 65, json={**PATIENT, "id": "a" * 65}, headers=FHIR_JSON), 400)
    outcome(await client.get("/Patient/bad_id!"), 404)
    await nothing_written(client)


async def test_unknown_element_and_wrong_type(client):
    body = outcome(await client.post("/Patient", json={**PATIENT, "colour": "blue"}, headers=FHIR_JSON), 400)
    assert any("colour" in " ".join(issue.get("expression", [])) for issue in body["issue"])
    body = outcome(await client.post("/Patient", json={**PATIENT, "birthDate": "not-a-date"}, headers=FHIR_JSON), 400)
    assert any("birthDate" in " ".join(issue.get("expression", [])) for issue in body["issue"])
    body = outcome(await client.post("/Patient", json={**PATIENT, "active": "yes"}, headers=FHIR_JSON), 400)
    assert any("active" in " ".join(issue.get("expression", [])) for issue in body["issue"])
    body = outcome(await client.post("/Patient", json={**PATIENT, "name": {"family": "x"}}, headers=FHIR_JSON), 400)
    assert any("name" in " ".join(issue.get("expression", [])) for issue in body["issue"])
    await nothing_written(client)


async def test_wrong_content_type_and_accept(client):
    outcome(await client.post("/Patient", content=b"{}", headers={"Content-Type": "text/plain"}), 415)
    outcome(await client.post("/Patient", content=b"a,b", headers={"Content-Type": "text/csv"}), 415)
    outcome(await client.post("/Patient", content=b"{}"), 415)  # no Content-Type at all
    outcome(await client.get("/metadata", headers={"Accept": "text/csv"}), 406)
    outcome(await client.get("/metadata?_format=text/turtle"), 406)
    assert (await client.get("/metadata", headers={"Accept": "application/json"})).status_code == 200
    assert (await client.get("/metadata?_format=json")).status_code == 200
    await nothing_written(client)


async def test_unknown_route_and_method(client):
    outcome(await client.get("/Patient/1/_history/1/extra"), 404)
    response = await client.delete("/metadata")
    outcome(response, 405)
    assert "GET" in response.headers["allow"]
    outcome(await client.put("/Patient/1/_history/1", json=PATIENT, headers=FHIR_JSON), 405)


async def test_bad_if_match(client):
    outcome(await client.put("/Patient/a", json={**PATIENT, "id": "a"}, headers={**FHIR_JSON, "If-Match": "nonsense"}), 400)
    await nothing_written(client)


async def test_numbers_past_64_bits(client):
    await client.put("/Patient/big", json={**PATIENT, "id": "big"}, headers=FHIR_JSON)
    outcome(await client.get("/Patient/big/_history/99999999999999999999"), 404)
    outcome(await client.get("/Patient/_history?_cursor=99999999999999999999"), 400)
    assert (await client.get("/Patient?_count=99999999999999999999")).status_code == 200  # capped at the maximum

