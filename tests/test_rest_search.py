"""Search over HTTP on both backends: Bundle shape, links, lenient/strict handling, forms of search."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from conftest import BASE, FHIR_JSON


async def put(client, resource: dict) -> dict:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def seed(client) -> None:
    await put(client, {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-05-01",
                       "name": [{"family": "Müller", "given": ["Anna"]}]})
    await put(client, {"resourceType": "Patient", "id": "p2", "gender": "male", "birthDate": "1990-01-01",
                       "name": [{"family": "Muller", "given": ["Ben"]}]})
    for n in range(5):
        await put(client, {"resourceType": "Observation", "id": f"o{n}", "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                           "subject": {"reference": "Patient/p1" if n < 3 else "Patient/p2"},
                           "effectiveDateTime": f"2021-0{n + 1}-01T10:00:00Z",
                           "valueQuantity": {"value": 60 + n, "unit": "/min", "system": "http://unitsofmeasure.org",
                                             "code": "/min"}})


def link(bundle: dict, relation: str) -> str | None:
    return next((item["url"] for item in bundle.get("link", []) if item["relation"] == relation), None)


async def test_searchset_bundle_shape(client):
    await seed(client)
    response = await client.get("/Patient?name=muller&_sort=birthdate")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/fhir+json")
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["p1", "p2"]  # accents folded: Müller ~ muller
    assert bundle["entry"][0]["fullUrl"] == f"{BASE}/Patient/p1"
    assert bundle["entry"][0]["search"] == {"mode": "match"}
    assert dict(parse_qsl(urlsplit(link(bundle, "self")).query)) == {"name": "muller", "_sort": "birthdate"}


async def test_paging_links_forward_and_back(client):
    await seed(client)
    first = (await client.get("/Observation?code=8867-4&_count=2&_sort=date")).json()
    assert [e["resource"]["id"] for e in first["entry"]] == ["o0", "o1"] and link(first, "previous") is None
    second = (await client.get(link(first, "next").removeprefix(BASE))).json()
    assert [e["resource"]["id"] for e in second["entry"]] == ["o2", "o3"]
    back = (await client.get(link(second, "previous").removeprefix(BASE))).json()
    assert [e["resource"]["id"] for e in back["entry"]] == ["o0", "o1"]
    third = (await client.get(link(second, "next").removeprefix(BASE))).json()
    assert [e["resource"]["id"] for e in third["entry"]] == ["o4"] and link(third, "next") is None


async def test_lenient_reports_ignored_parameters_and_strict_refuses(client):
    await seed(client)
    lenient = (await client.get("/Patient?gender=female&colour=blue")).json()
    matches = [e for e in lenient["entry"] if e["search"]["mode"] == "match"]
    outcomes = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert [e["resource"]["id"] for e in matches] == ["p1"]
    assert outcomes and "colour" in outcomes[0]["resource"]["issue"][0]["diagnostics"]
    assert "colour" not in link(lenient, "self")
    strict = await client.get("/Patient?gender=female&colour=blue", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    unknown_sort = await client.get("/Patient?_sort=colour", headers={"Prefer": "handling=strict"})
    assert unknown_sort.status_code == 400


async def test_bad_values_are_400(client):
    for query in ("/Patient?birthdate=notadate", "/Observation?value-quantity=abc", "/Patient?_count=-1",
                  "/Patient?_cursor=garbage", "/Bogus?x=1"):
        response = await client.get(query)
        assert response.status_code in (400, 404), (query, response.status_code)
        assert response.json()["resourceType"] == "OperationOutcome"


async def test_post_search_compartment_and_system(client):
    await seed(client)
    posted = await client.post("/Observation/_search", content=b"subject=Patient/p1&_count=10",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert posted.status_code == 200 and {e["resource"]["id"] for e in posted.json()["entry"]} == {"o0", "o1", "o2"}
    compartment = (await client.get("/Patient/p2/Observation")).json()
    assert {e["resource"]["id"] for e in compartment["entry"]} == {"o3", "o4"}
    system = (await client.get("/?_type=Patient,Observation&_id=p1,o4")).json()
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in system["entry"]} == {
        ("Patient", "p1"), ("Observation", "o4")}


async def test_summary_and_elements_in_search(client):
    await seed(client)
    count = (await client.get("/Observation?subject=Patient/p1&_summary=count")).json()
    assert count["total"] == 3 and not count.get("entry")
    elements = (await client.get("/Observation?_id=o1&_elements=status")).json()
    resource = elements["entry"][0]["resource"]
    assert resource["status"] == "final" and "valueQuantity" not in resource
    assert any(tag["code"] == "SUBSETTED" for tag in resource["meta"]["tag"])


async def test_deleted_and_old_versions_do_not_match(client):
    await seed(client)
    await put(client, {"resourceType": "Patient", "id": "p2", "gender": "other"})
    await client.delete("/Patient/p1")
    assert (await client.get("/Patient?gender=female")).json().get("entry", []) == []
    assert [e["resource"]["id"] for e in (await client.get("/Patient?gender=other")).json()["entry"]] == ["p2"]
    assert (await client.get("/Patient?name=muller")).json().get("entry", []) == []
