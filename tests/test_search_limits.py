"""The bounds on one search, over HTTP on both backends: at each bound a search works and finds what it should; one
past it is a 400 `too-costly` naming the setting, under strict and lenient handling alike."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
import pytest_asyncio

from conftest import BACKENDS, BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

STRICT = {"Prefer": "handling=strict"}
RESOURCES = [
    {"resourceType": "Organization", "id": "root", "name": "Root"},
    {"resourceType": "Organization", "id": "middle", "name": "Middle", "partOf": {"reference": "Organization/root"}},
    {"resourceType": "Organization", "id": "leaf", "name": "Leaf", "partOf": {"reference": "Organization/middle"}},
    {"resourceType": "Patient", "id": "p1", "managingOrganization": {"reference": "Organization/leaf"}},
    *({"resourceType": "Observation", "id": f"o{n}", "status": "final", "subject": {"reference": "Patient/p1"},
       "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
       "effectiveDateTime": f"2021-01-0{n + 1}T10:00:00Z",
       "valueQuantity": {"value": n + 1, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}
      for n in range(5)),
]
ALL_OBSERVATIONS = {f"o{n}" for n in range(5)}


async def started(backend: str, tmp_path, **settings) -> tuple:
    app = create_app(Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, **settings),
                     make_store(backend, tmp_path))
    await app.startup()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=300)
    for resource in RESOURCES:
        response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
        assert response.status_code == 201, response.text
    return app, client


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=BACKENDS)
async def client(request, tmp_path_factory):
    app, http_client = await started(request.param, tmp_path_factory.mktemp(request.param))
    yield http_client
    await http_client.aclose()
    await app.shutdown()


async def found(client, path: str, params: list[tuple[str, str]]) -> set[str]:
    """The ids a search finds, in strict handling (nothing may be left out); POSTed, as the query may be long."""
    response = await client.post(f"{path}/_search", content=urlencode(params),
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **STRICT})
    assert response.status_code == 200, response.text[:1000]
    bundle = response.json()
    assert "next" not in {link["relation"] for link in bundle["link"]}
    return {entry["resource"]["id"] for entry in bundle.get("entry", [])}


async def refused(client, path: str, params: list[tuple[str, str]], setting: str) -> None:
    """400 too-costly naming `setting` with its value, strict and lenient."""
    for handling in (STRICT, {}):
        response = await client.post(f"{path}/_search", content=urlencode(params),
                                     headers={"Content-Type": "application/x-www-form-urlencoded", **handling})
        assert response.status_code == 400, response.text[:1000]
        issue = response.json()["issue"][0]
        assert issue["code"] == "too-costly" and setting in issue["diagnostics"], issue


# --- chain and _has depth -----------------------------------------------------------------------------------------

CHAIN_4 = ("subject:Patient.organization.partof.partof.name", "Root")
CHAIN_5 = ("subject:Patient.organization.partof.partof.partof.name", "Root")
HAS_4 = ("_has:Organization:partof:_has:Organization:partof:_has:Patient:organization:_has:Observation:subject:status",
         "final")
HAS_5 = ("_has:Organization:partof:" + HAS_4[0], "final")
MIXED_4 = ("_has:Observation:subject:subject:Patient.organization.partof.name", "Middle")
MIXED_5 = ("_has:Observation:subject:subject:Patient.organization.partof.partof.name", "Root")


async def test_chains_and_has_work_at_the_depth_limit_and_are_refused_past_it(client):
    assert await found(client, "/Observation", [CHAIN_4]) == ALL_OBSERVATIONS
    assert await found(client, "/Organization", [HAS_4]) == {"root"}
    assert await found(client, "/Patient", [MIXED_4]) == {"p1"}
    await refused(client, "/Observation", [CHAIN_5], "HEARTH_SEARCH_MAX_CHAIN_DEPTH (4)")
    await refused(client, "/Organization", [HAS_5], "HEARTH_SEARCH_MAX_CHAIN_DEPTH (4)")
    await refused(client, "/Patient", [MIXED_5], "HEARTH_SEARCH_MAX_CHAIN_DEPTH (4)")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_depth_limit_is_a_setting(backend, tmp_path):
    app, client = await started(backend, tmp_path, search_max_chain_depth=8)
    try:
        assert await found(client, "/Observation", [CHAIN_5]) == set()  # the chain goes past the root
        assert await found(client, "/Organization", [HAS_5]) == set()
        assert await found(client, "/Patient", [MIXED_5]) == {"p1"}
        await refused(client, "/Organization", [("partof." * 9 + "name", "Root")], "HEARTH_SEARCH_MAX_CHAIN_DEPTH (8)")
        # SQLite's parser takes subqueries nested about six levels deep: deeper, a 400 there too
        response = await client.get("/Organization", params={"partof." * 7 + "name": "Root"})
        if backend == "sqlite":
            assert response.status_code == 400, response.text
            issue = response.json()["issue"][0]
            assert issue["code"] == "too-costly" and "HEARTH_SEARCH_MAX_CHAIN_DEPTH" in issue["diagnostics"]
        else:
            assert response.status_code == 200 and response.json()["total"] == 0
    finally:
        await client.aclose()
        await app.shutdown()


# --- values in one parameter ----------------------------------------------------------------------------------------

def values(wanted: list[str], other) -> str:
    """200 comma-separated values: `wanted`, then made-up others."""
    return ",".join([*wanted, *(other(n) for n in range(200 - len(wanted)))])


AT_THE_VALUES_LIMIT = [
    ("code", values(["http://loinc.org|8867-4"], lambda n: f"http://loinc.org|x-{n}"), ALL_OBSERVATIONS),
    ("value-quantity", values(["2||kg", "4|http://unitsofmeasure.org|kg"], lambda n: f"{1000 + n}||kg"), {"o1", "o3"}),
    ("value-quantity", values(["ne1||kg"], lambda n: f"sa{1000 + n}||kg"), {"o1", "o2", "o3", "o4"}),
    ("date", values(["2021-01-02", "ge2021-01-05"], lambda n: f"{1800 + n}-06"), {"o1", "o4"}),
    ("_id", values(["o0", "o2"], lambda n: f"nope{n}"), {"o0", "o2"}),
    ("subject", values(["Patient/p1"], lambda n: f"Patient/nope{n}"), ALL_OBSERVATIONS),
    ("subject:Patient.organization.partof.partof.name", values(["roo"], lambda n: f"x{n}"), ALL_OBSERVATIONS),
]


@pytest.mark.parametrize("name, value, expected", AT_THE_VALUES_LIMIT, ids=[case[0] for case in AT_THE_VALUES_LIMIT])
async def test_a_parameter_works_at_the_values_limit_and_is_refused_past_it(client, name, value, expected):
    assert await found(client, "/Observation", [(name, value)]) == expected
    await refused(client, "/Observation", [(name, value + ",extra")], "HEARTH_SEARCH_MAX_VALUES (200)")


async def test_a_uri_above_counts_its_prefixes_as_values(client):
    url = "http://example.org/" + "a" * 180  # 199 characters: 200 prefixes
    await client.put("/ValueSet/vs", json={"resourceType": "ValueSet", "id": "vs", "status": "active",
                                           "url": url[:40]}, headers=FHIR_JSON)
    assert await found(client, "/ValueSet", [("url:above", url)]) == {"vs"}
    await refused(client, "/ValueSet", [("url:above", url + "a")], "HEARTH_SEARCH_MAX_VALUES (200)")


async def test_result_parameters_count_their_values_too(client):
    await refused(client, "/Observation", [("_sort", ",".join(["date"] * 201))], "HEARTH_SEARCH_MAX_VALUES (200)")
    await refused(client, "/Observation", [("_elements", ",".join(f"e{n}" for n in range(201)))],
                  "HEARTH_SEARCH_MAX_VALUES (200)")
    # a sort key repeating an earlier one's parameter cannot change the order: it is dropped
    response = await client.get("/Observation", params={"_sort": ",".join(["-date", "date", "_id"] * 60)})
    assert [e["resource"]["id"] for e in response.json()["entry"]] == ["o4", "o3", "o2", "o1", "o0"]
    self_link = next(link["url"] for link in response.json()["link"] if link["relation"] == "self")
    assert parse_qsl(urlsplit(self_link).query) == [("_sort", "-date,_id")]


# --- parameters in one search ---------------------------------------------------------------------------------------

AT_THE_PARAMETERS_LIMIT = [*([("value-quantity", "gt0")] * 33), *([("date", "ge2000")] * 33),
                           *([("code", "8867-4")] * 32), ("status", "final"), ("_id", "o3")]


async def test_a_search_works_at_the_parameters_limit_and_is_refused_past_it(client):
    assert len(AT_THE_PARAMETERS_LIMIT) == 100
    assert await found(client, "/Observation", AT_THE_PARAMETERS_LIMIT) == {"o3"}
    await refused(client, "/Observation", [*AT_THE_PARAMETERS_LIMIT, ("status", "final")],
                  "HEARTH_SEARCH_MAX_PARAMETERS (100)")
    await refused(client, "/Observation", [("_include", "Observation:subject")] * 101,
                  "HEARTH_SEARCH_MAX_PARAMETERS (100)")


async def test_a_search_works_at_both_limits_at_once_and_is_refused_past_either(client):
    # 100 parameters of 200 values each, the quantity ones of the costliest kind (two alternatives per value and unit)
    ranges = [("value-quantity", values(["ne1||kg"], lambda n: f"ne{1000 + n}||kg"))] * 49
    dates = [("date", values(["ge2021-01-02"], lambda n: f"eb{1800 + n}-01-01"))] * 50
    both = [*ranges, *dates, ("_id", values(["o0", "o4"], str))]
    assert await found(client, "/Observation", both) == {"o4"}
    await refused(client, "/Observation", [*both, ("status", "final")], "HEARTH_SEARCH_MAX_PARAMETERS (100)")
    await refused(client, "/Observation", [*both[:-1], ("_id", both[-1][1] + ",o1")], "HEARTH_SEARCH_MAX_VALUES (200)")


async def test_conditional_criteria_are_bounded_too(client):
    response = await client.post("/Patient", json={"resourceType": "Patient"},
                                 headers={**FHIR_JSON, "If-None-Exist": "_id=" + ",".join(map(str, range(201)))})
    assert response.status_code == 400 and response.json()["issue"][0]["code"] == "too-costly"
    response = await client.post("/Patient", json={"resourceType": "Patient"},
                                 headers={**FHIR_JSON, "If-None-Exist": urlencode([MIXED_5])})
    assert response.status_code == 400 and "HEARTH_SEARCH_MAX_CHAIN_DEPTH" in response.text
