"""history of an instance, a type and the system, with _since, _count and paging."""

from __future__ import annotations

from conftest import BASE, FHIR_JSON


async def put(client, resource_type: str, resource_id: str, **fields):
    response = await client.put(f"/{resource_type}/{resource_id}",
                                json={"resourceType": resource_type, "id": resource_id, **fields}, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    return response.json()


async def test_instance_history_newest_first_with_delete(client):
    await put(client, "Patient", "h1", gender="male")
    await put(client, "Patient", "h1", gender="female")
    await client.delete("/Patient/h1")
    bundle = (await client.get("/Patient/h1/_history")).json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "history" and bundle["total"] == 3
    methods = [entry["request"]["method"] for entry in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]  # version 1 is reported as its create
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][1]["resource"]["gender"] == "female"
    assert bundle["entry"][1]["response"]["etag"] == 'W/"2"'
    assert bundle["entry"][1]["fullUrl"] == f"{BASE}/Patient/h1"
    assert (await client.get("/Patient/nope/_history")).status_code == 404


async def test_type_and_system_history_and_paging(client):
    for n in range(5):
        await put(client, "Patient", f"p{n}")
    await put(client, "Observation", "o1", status="final", code={"text": "x"})
    assert (await client.get("/Patient/_history")).json()["total"] == 5
    assert (await client.get("/_history")).json()["total"] == 6
    seen, url = [], "/Patient/_history?_count=2"
    while url:
        page = (await client.get(url)).json()
        assert len(page["entry"]) <= 2
        seen += [entry["resource"]["id"] for entry in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        if url:
            assert url.startswith(BASE)
            url = url[len(BASE):]
    assert seen == ["p4", "p3", "p2", "p1", "p0"]


async def test_only_the_first_page_carries_the_total(client):
    """Counting every version a history matches reads them all: done once, for the first page."""
    for n in range(5):
        await put(client, "Patient", f"t{n}")
    first = (await client.get("/Patient/_history?_count=2")).json()
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await client.get(following[len(BASE):])).json()
    assert first["total"] == 5 and "total" not in second and len(second["entry"]) == 2


async def test_since(client):
    first = await put(client, "Patient", "s1")
    await put(client, "Patient", "s2")
    since = first["meta"]["lastUpdated"]
    later = (await client.get(f"/Patient/_history?_since={since}")).json()
    assert {e["resource"]["id"] for e in later["entry"]} == {"s1", "s2"}
    future = (await client.get("/Patient/_history?_since=2999-01-01")).json()
    assert future["total"] == 0
    assert (await client.get("/Patient/_history?_since=yesterday")).status_code == 400
    assert (await client.get("/Patient/_history?_count=abc")).status_code == 400
