"""The search contract both backends keep alike, over HTTP: the default order (creation order, also after the sort
keys), `_include:iterate` to a fixpoint within its bound (HEARTH_MAX_COUNT), and paging cursors (every page both
ways; a cursor of another search, or an edited one, is a 400)."""

from __future__ import annotations

import base64
import contextlib
from typing import AsyncIterator

import httpx
import orjson
import pytest

from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings


@contextlib.asynccontextmanager
async def serving(backend: str, tmp_path, **settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, **settings),
                     make_store(backend, tmp_path))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield client
    finally:
        await app.shutdown()


async def put(client: httpx.AsyncClient, resource: dict) -> None:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text


async def ids(client: httpx.AsyncClient, url: str) -> list[str]:
    bundle = await get(client, url)
    return [e["resource"]["id"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"]


async def get(client: httpx.AsyncClient, url: str) -> dict:
    response = await client.get(url)
    assert response.status_code == 200, response.text
    return response.json()


def link(bundle: dict, relation: str) -> str | None:
    found = [item["url"] for item in bundle.get("link", ()) if item["relation"] == relation]
    return found[0].removeprefix(BASE) if found else None


# --- the default order --------------------------------------------------------------------------------------------

CREATED = ["m", "z", "a", "q", "b"]  # the order the patients are created in: not the order of their ids


@pytest.fixture
async def patients(client):
    for n, patient_id in enumerate(CREATED):
        await put(client, {"resourceType": "Patient", "id": patient_id, "gender": "female" if n % 2 else "male",
                           "birthDate": "1990-01-01"})
    return client


async def test_without_sort_resources_come_in_creation_order(patients):
    assert await ids(patients, "/Patient") == CREATED
    assert await ids(patients, "/Patient?birthdate=1990") == CREATED
    # an update keeps a resource's place; so does a delete and a create again
    await put(patients, {"resourceType": "Patient", "id": "m", "gender": "male", "birthDate": "1990-01-01",
                         "active": True})
    assert (await patients.delete("/Patient/z")).status_code in (200, 204)
    assert await ids(patients, "/Patient") == ["m", "a", "q", "b"]
    await put(patients, {"resourceType": "Patient", "id": "z", "gender": "female", "birthDate": "1990-01-01"})
    await put(patients, {"resourceType": "Patient", "id": "c", "gender": "male", "birthDate": "1990-01-01"})
    assert await ids(patients, "/Patient") == [*CREATED, "c"]


async def test_ties_after_the_sort_keys_follow_creation_order(patients):
    males = [patient for n, patient in enumerate(CREATED) if n % 2 == 0]
    females = [patient for n, patient in enumerate(CREATED) if n % 2]
    assert await ids(patients, "/Patient?_sort=gender") == females + males
    # ties in the direction of the last sort key
    assert await ids(patients, "/Patient?_sort=-gender") == males[::-1] + females[::-1]
    assert await ids(patients, "/Patient?_sort=birthdate,gender") == females + males
    assert await ids(patients, "/Patient?_sort=-birthdate") == CREATED[::-1]


# --- _include:iterate ---------------------------------------------------------------------------------------------

def panel(n: int, members: list[int]) -> dict:
    observation = {"resourceType": "Observation", "id": f"o{n}", "status": "final", "code": {"text": "panel"}}
    if members:
        observation["hasMember"] = [{"reference": f"Observation/o{m}"} for m in members]
    return observation


async def chain(client: httpx.AsyncClient, length: int, back_to_start: bool = False) -> None:
    """o0 -> o1 -> ... -> o{length}: each has the next as a member (the last, o0 again when `back_to_start`)."""
    for n in range(length + 1):
        members = [n + 1] if n < length else [0] if back_to_start else []
        await put(client, panel(n, members))


ITERATE = "/Observation?_id=o0&_include:iterate=Observation:has-member"


async def included(client: httpx.AsyncClient, url: str) -> tuple[list[str], list[dict]]:
    bundle = await get(client, url)
    entries = bundle.get("entry", ())
    return ([e["resource"]["id"] for e in entries if e["search"]["mode"] == "include"],
            [e["resource"] for e in entries if e["search"]["mode"] == "outcome"])


async def test_iterate_follows_a_chain_six_long_to_its_end(client):
    await chain(client, 6)
    found, outcomes = await included(client, ITERATE)
    assert found == ["o1", "o2", "o3", "o4", "o5", "o6"] and outcomes == []
    # without :iterate, one step only
    assert (await included(client, "/Observation?_id=o0&_include=Observation:has-member"))[0] == ["o1"]


async def test_iterate_ends_on_a_cycle(client):
    await chain(client, 6, back_to_start=True)
    found, outcomes = await included(client, ITERATE)
    assert found == ["o1", "o2", "o3", "o4", "o5", "o6"] and outcomes == []  # o0 is a match: never included
    revincluded, _ = await included(client, "/Observation?_id=o3&_revinclude:iterate=Observation:has-member")
    assert revincluded == ["o2", "o1", "o0", "o6", "o5", "o4"]


async def test_includes_stop_at_max_count_and_say_so(backend, tmp_path):
    async with serving(backend, tmp_path, max_count=4) as client:
        await chain(client, 6, back_to_start=True)
        found, outcomes = await included(client, ITERATE)
        assert found == ["o1", "o2", "o3", "o4"]
        [outcome] = outcomes
        issue = outcome["issue"][0]
        assert issue["severity"] == "warning" and "HEARTH_MAX_COUNT (4)" in issue["diagnostics"]
        assert (await included(client, "/Observation?_id=o0,o1&_include=Observation:has-member"))[1] == []


# --- cursors ------------------------------------------------------------------------------------------------------

SORTS = ["", "&_sort=_id", "&_sort=-birthdate", "&_sort=gender,-_lastUpdated", "&_sort=-family"]


@pytest.mark.parametrize("sort", SORTS)
async def test_paging_visits_every_page_forward_and_back(client, sort):
    for n in range(11):
        named = {"name": [{"family": f"F{n % 3}"}]} if n % 5 else {}  # some without: they sort lowest
        await put(client, {"resourceType": "Patient", "id": f"p{(n * 7) % 11:02d}", "gender": ["male", "female"][n % 2],
                           "birthDate": f"19{80 + n % 4}-01-01", **named})
    everything = await ids(client, f"/Patient?_count=100{sort}")
    assert sorted(everything) == [f"p{n:02d}" for n in range(11)]
    pages, bundle = [], await get(client, f"/Patient?_count=3{sort}")
    while True:
        pages.append([e["resource"]["id"] for e in bundle["entry"]])
        assert (link(bundle, "previous") is None) == (len(pages) == 1)
        if link(bundle, "next") is None:
            break
        bundle = await get(client, link(bundle, "next"))
    assert [i for page in pages for i in page] == everything and [len(p) for p in pages] == [3, 3, 3, 2]
    back = []
    while link(bundle, "previous") is not None:
        bundle = await get(client, link(bundle, "previous"))
        back.insert(0, [e["resource"]["id"] for e in bundle["entry"]])
    assert back == pages[:-1]


def cursor_of(url: str) -> str:
    return dict(httpx.URL(url).params)["_cursor"]


async def test_a_cursor_of_another_search_is_a_400(client):
    for n in range(4):
        await put(client, {"resourceType": "Patient", "id": f"p{n}", "gender": ["male", "female"][n % 2],
                           "birthDate": "1990-01-01"})
    male = cursor_of(link(await get(client, "/Patient?gender=male&_count=1"), "next"))
    by_birth = cursor_of(link(await get(client, "/Patient?_count=1&_sort=birthdate"), "next"))
    for url, cursor in [("/Patient?gender=female&_count=1", male),  # another search, the same order
                        ("/Patient?_count=1", by_birth),  # another order
                        ("/Patient?gender=male&_count=1&_sort=gender", male),
                        ("/Patient/p0/Patient?gender=male&_count=1", male)]:  # another scope
        response = await client.get(url, params={"_cursor": cursor})
        assert response.status_code == 400, (url, response.text)
        issue = response.json()["issue"][0]
        assert issue["expression"] == ["_cursor"] and "does not belong to this search" in issue["diagnostics"]
    # the page's shape is not the search: another page size, or includes, keep the cursor good
    assert await ids(client, f"/Patient?gender=male&_count=5&_cursor={male}") == ["p2"]
    assert await ids(client, f"/Patient?gender=male&_include=Patient:link&_cursor={male}") == ["p2"]


async def test_an_edited_cursor_is_a_400(client):
    for n in range(3):
        await put(client, {"resourceType": "Patient", "id": f"p{n}"})
    cursor = cursor_of(link(await get(client, "/Patient?_count=1"), "next"))
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    payload = orjson.loads(bytes(raw[8:]))
    payload[1][0] += 1  # a place one further on, under the original signature
    edited = base64.urlsafe_b64encode(bytes(raw[:8]) + orjson.dumps(payload)).rstrip(b"=").decode()
    for forged in (edited, cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")):
        response = await client.get("/Patient", params={"_count": "1", "_cursor": forged})
        assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["_cursor"]
