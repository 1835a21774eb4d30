"""Hostile query strings never make a 500: numbers and dates with thousands of digits, exponents past any float,
NUL bytes, bytes that decode to nothing valid, odd digits, in every parameter type, modifier, prefix, chain, `_has`,
result parameter and history parameter, on both backends."""

from __future__ import annotations

import httpx
import pytest
import pytest_asyncio

from conftest import BACKENDS, BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

DIGITS = "9" * 5000
# raw (already percent-encoded) values
VALUES = [
    DIGITS, f"-{DIGITS}.{DIGITS}", f"{DIGITS}e{DIGITS}", "1e999999999", "1e-999999999", "0e-999999999999", "1E+5000",
    f"ge{DIGITS}", f"ap{DIGITS}", f"sa-{DIGITS}", "ap1e999999999", f"{DIGITS}-01-01", f"2020-01-01T00:00:00.{DIGITS}",
    "ap0001-01-01", f"eb9999-12-31T23:59:59.{DIGITS}Z", f"{DIGITS}|http://unitsofmeasure.org|kg",
    f"ne{DIGITS}||kg", f"http://x|{DIGITS}", f"Patient/{DIGITS}", f"{DIGITS}${DIGITS}", "%00", "a%00b", "%ED%A0%80",
    "%C0%80", "%FF", "%C2%B2", "%D9%A1%D9%A2", "\\", "a\\", "%7C" * 50, "%24" * 50, "%2C" * 50,
]
TYPE_PARAMETERS = [
    ("Observation", "code"), ("Observation", "code:not"), ("Observation", "code:text"), ("Observation", "code:below"),
    ("Observation", "code:in"), ("Patient", "identifier:of-type"), ("Patient", "name"), ("Patient", "name:exact"),
    ("Patient", "name:contains"), ("Observation", "date"), ("Patient", "birthdate"), ("Observation", "_lastUpdated"),
    ("RiskAssessment", "probability"), ("Observation", "value-quantity"), ("Observation", "subject"),
    ("Observation", "subject:Patient"), ("Observation", "subject:identifier"), ("ValueSet", "url"),
    ("ValueSet", "url:below"), ("ValueSet", "url:above"), ("Observation", "code-value-quantity"),
    ("Observation", "_id"), ("Patient", "_list"), ("Observation", "code:missing"),
    ("Observation", "subject:Patient.birthdate"), ("Observation", "subject.name"), ("Observation", "subject._id"),
    ("Patient", "_has:Observation:patient:value-quantity"), ("Patient", "_has:Observation:patient:_has:%00:x:y"),
    ("Observation", "_include"), ("Observation", "_revinclude"), ("Observation", "_include:iterate"),
    ("Observation", "_sort"), ("Observation", "_count"), ("Observation", "_cursor"), ("Observation", "_total"),
    ("Observation", "_summary"), ("Observation", "_elements"), ("", "_type"), ("", "_id"),
    ("Observation", "%00"), ("Observation", "code:%00"), ("Observation", "subject.%00"), ("Observation", "%ED%A0%80"),
]
HISTORY_PARAMETERS = ["_count", "_cursor", "_since", "_at"]


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def client(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    app = create_app(Settings(storage=str(tmp / "hearth.db"), base_url=BASE), make_store(request.param, tmp))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http_client:
        for resource in ({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01", "name": [{"family": "A"}]},
                         {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 1, "code": "kg"}}):
            response = await http_client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource,
                                             headers=FHIR_JSON)
            assert response.status_code in (200, 201), response.text
        yield http_client
    await app.shutdown()


def answered(response: httpx.Response) -> None:
    """A result or a client error, as FHIR: never a 500."""
    assert response.status_code < 500, (str(response.url)[:300], response.text[:300])
    assert response.json()["resourceType"] in ("Bundle", "OperationOutcome")


async def test_search_parameters(client):
    short = "%2C".join(value for value in VALUES if DIGITS not in value)
    for resource_type, name in TYPE_PARAMETERS:
        for handling in ({}, {"Prefer": "handling=strict"}):
            for value in (*VALUES, short):
                answered(await client.get(f"/{resource_type}?{name}={value}", headers=handling))


async def test_history_parameters(client):
    for name in HISTORY_PARAMETERS:
        for path in ("/_history", "/Patient/_history", "/Patient/p1/_history"):
            for value in VALUES:
                answered(await client.get(f"{path}?{name}={value}"))


async def test_conditional_criteria(client):
    for value in VALUES:
        response = await client.post("/Observation", json={"resourceType": "Observation", "status": "final",
                                                           "code": {"text": "x"}},
                                     headers={**FHIR_JSON, "If-None-Exist": f"value-quantity={value}"})
        assert response.status_code < 500, (value[:40], response.text[:300])
