"""The fake upstream EHR the connectors' tests run against: each behaviour and each fault it promises."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fake_ehr import FakeEhr

T0 = "2026-01-01T00:00:00.000000Z"
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
Start = Callable[..., Awaitable[FakeEhr]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Starts a FakeEhr with the given options; stops them all after the test."""
    started: list[FakeEhr] = []

    async def start_ehr(**options: Any) -> FakeEhr:
        ehr = FakeEhr(**options)
        await ehr.start()
        started.append(ehr)
        return ehr

    yield start_ehr
    for ehr in started:
        await ehr.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(http: aiohttp.ClientSession, url: str, **options: Any) -> tuple[int, dict]:
    async with http.get(url, **options) as response:
        return response.status, await response.json(content_type=None)


def next_link(bundle: dict) -> str | None:
    return next((link["url"] for link in bundle["link"] if link["relation"] == "next"), None)


async def pages(http: aiohttp.ClientSession, url: str, **options: Any) -> list[dict]:
    """Every page of a search or history, following the next links as given."""
    bundles = []
    while url:
        status, bundle = await get_json(http, url, **options)
        assert status == 200, bundle
        bundles.append(bundle)
        url = next_link(bundle)
    return bundles


def ids(bundles: list[dict]) -> list[str]:
    return [entry["resource"]["id"] for bundle in bundles for entry in bundle.get("entry", [])]


def patient(resource_id: str, **fields: Any) -> dict:
    return {"resourceType": "Patient", "id": resource_id, **fields}


async def token(http: aiohttp.ClientSession, ehr: FakeEhr, **form: str) -> tuple[int, dict]:
    basic = {} if "client_assertion" in form else {"Authorization": aiohttp.encode_basic_auth("app", "s3cret")}
    async with http.post(ehr.token_url, data={"grant_type": "client_credentials", "scope": "system/*.rs", **form},
                         headers=basic) as response:
        return response.status, await response.json()


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


async def test_metadata_and_smart_configuration(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(require_token=True, clients={"app": "s3cret"})
    ehr.put(patient("p1"))
    status, capability = await get_json(http, f"{ehr.base}/metadata")
    assert status == 200 and capability["fhirVersion"] == "4.0.1"
    rest = capability["rest"][0]
    [described] = rest["resource"]
    assert described["type"] == "Patient" and {"code": "history-type"} in described["interaction"]
    assert described["searchParam"] == [{"name": "_lastUpdated", "type": "date"}]
    assert rest["security"]["extension"][0]["extension"] == [{"url": "token", "valueUri": f"{ehr.base}/auth/token"}]
    status, smart = await get_json(http, f"{ehr.base}/.well-known/smart-configuration")
    assert status == 200 and smart["token_endpoint"] == ehr.token_url
    assert smart["token_endpoint_auth_methods_supported"] == ["client_secret_basic", "private_key_jwt"]


async def test_search_pages_through_opaque_links_over_ties(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(page_size=3)
    for n in range(7):
        ehr.put(patient(f"p{n}"), last_updated=T0)
    ehr.put(patient("a-later"), last_updated="2026-01-02T00:00:00.000000Z")
    bundles = await pages(http, f"{ehr.base}/Patient?_sort=_lastUpdated&_count=10&name=ignored")
    assert ids(bundles) == [f"p{n}" for n in range(7)] + ["a-later"]
    assert [len(bundle["entry"]) for bundle in bundles] == [3, 3, 2] and bundles[0]["total"] == 8
    assert all(next_link(bundle).startswith(f"{ehr.base}?_getpages=") for bundle in bundles[:2])
    assert bundles[0]["entry"][0]["fullUrl"] == f"{ehr.base}/Patient/p0"
    assert [request.path for request in ehr.requests] == ["/Patient", "", ""]
    assert ehr.requests[0].query["name"] == ["ignored"]
    unsorted = await pages(http, f"{ehr.base}/Patient")
    assert ids(unsorted)[0] == "a-later"  # id order, not time order


async def test_last_updated_compares_at_the_precision_of_the_value(start: Start,
                                                                   http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.put(patient("at-0"), last_updated=T0)
    ehr.put(patient("at-half"), last_updated="2026-01-01T00:00:00.500000+00:00")
    ehr.put(patient("at-1"), last_updated="2026-01-01T00:00:01Z")
    searches = {"gt2026-01-01T00:00:00.000000Z": ["at-half", "at-1"], "gt2026-01-01T00:00:00Z": ["at-1"],
                "ge2026-01-01T00:00:00.5Z": ["at-half", "at-1"], "lt2026-01-01T00:00:01Z": ["at-0", "at-half"],
                "2026-01-01T00:00:00Z": ["at-0", "at-half"], "le2026-01-01": ["at-0", "at-half", "at-1"]}
    for value, expected in searches.items():
        bundles = await pages(http, f"{ehr.base}/Patient", params={"_lastUpdated": value, "_sort": "_lastUpdated"})
        assert ids(bundles) == expected, value
    status, outcome = await get_json(http, f"{ehr.base}/Patient?_lastUpdated=gtyesterday")
    assert status == 400 and outcome["resourceType"] == "OperationOutcome"


async def test_later_pages_come_from_the_snapshot_of_the_first(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(page_size=2)
    for n in range(4):
        ehr.put(patient(f"p{n}", active=True), last_updated=f"2026-01-01T00:00:0{n}Z")
    seen: list[int] = []

    def change_while_paging(page: int) -> None:
        seen.append(page)
        if page == 1:
            ehr.put(patient("p3", active=False))
            ehr.put(patient("p9"))

    ehr.on_page = change_while_paging
    bundles = await pages(http, f"{ehr.base}/Patient?_sort=_lastUpdated")
    assert seen == [0, 1] and ids(bundles) == ["p0", "p1", "p2", "p3"]
    assert bundles[1]["entry"][1]["resource"]["meta"]["versionId"] == "1"
    assert ehr.current("Patient", "p3")["meta"]["versionId"] == "2"
    ehr.on_page = None
    _, first = await get_json(http, f"{ehr.base}/Patient?_sort=_lastUpdated")
    ehr.expire_pages()
    status, outcome = await get_json(http, next_link(first))
    assert status == 410 and outcome["resourceType"] == "OperationOutcome"


async def test_a_server_without_last_updated_or_history(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(supports_last_updated=False, supports_history=False)
    ehr.put(patient("p1"))
    for query in ("_lastUpdated=gt2026-01-01T00:00:00Z", "_sort=_lastUpdated"):
        status, outcome = await get_json(http, f"{ehr.base}/Patient?{query}")
        assert status == 400 and "Unknown search parameter" in outcome["issue"][0]["diagnostics"]
    for path in ("/Patient/_history", "/_history"):
        status, outcome = await get_json(http, ehr.base + path)
        assert status == 400 and outcome["issue"][0]["diagnostics"] == "history not supported"
    _, capability = await get_json(http, f"{ehr.base}/metadata")
    [described] = capability["rest"][0]["resource"]
    assert "searchParam" not in described and {"code": "history-type"} not in described["interaction"]


async def test_history_newest_first_with_deletes_and_since(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(page_size=2)
    ehr.put(patient("p1", active=True), last_updated="2026-01-01T00:00:01Z")
    ehr.put(patient("p1", active=False), last_updated="2026-01-01T00:00:02Z")
    ehr.put({"resourceType": "Observation", "id": "o1"}, last_updated="2026-01-01T00:00:02Z")
    ehr.delete("Patient", "p1", last_updated="2026-01-01T00:00:03Z")
    entries = [entry for bundle in await pages(http, f"{ehr.base}/Patient/_history") for entry in bundle["entry"]]
    assert [(e["request"]["method"], e["response"]["etag"]) for e in entries] == [
        ("DELETE", 'W/"3"'), ("PUT", 'W/"2"'), ("POST", 'W/"1"')]
    assert "resource" not in entries[0] and entries[0]["request"]["url"] == "Patient/p1"
    assert entries[1]["response"]["lastModified"] == "2026-01-01T00:00:02Z"
    since = await pages(http, f"{ehr.base}/_history", params={"_since": "2026-01-01T00:00:02Z"})
    assert [e["fullUrl"].removeprefix(ehr.base) for b in since for e in b["entry"]] == [
        "/Patient/p1", "/Observation/o1", "/Patient/p1"]
    reads = {"/Patient/p1": 410, "/Patient/p1/_history/2": 200, "/Patient/p1/_history/3": 410,
             "/Patient/p1/_history/4": 404, "/Patient/nobody": 404}
    for path, expected in reads.items():
        status, _ = await get_json(http, ehr.base + path)
        assert status == expected, path
    assert ehr.current("Patient", "p1") is None


async def test_invalid_resources_are_served_as_given(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.put(patient("bad", gender="robot"))
    ehr.put({"resourceType": "Observation", "id": "x"})
    created = ehr.put({"resourceType": "Observation"})
    assert uuid.UUID(created["id"]) and created["meta"]["versionId"] == "1"
    status, read = await get_json(http, f"{ehr.base}/Patient/bad")
    assert status == 200 and read["gender"] == "robot"
    status, read = await get_json(http, f"{ehr.base}/Observation/x")
    assert status == 200 and set(read) == {"resourceType", "id", "meta"}


async def test_client_secret_basic_tokens_and_their_expiry(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(require_token=True, clients={"app": "s3cret"}, token_lifetime=0.3)
    ehr.put(patient("p1"))
    async with http.get(f"{ehr.base}/Patient") as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    async with http.post(ehr.token_url, data={"grant_type": "client_credentials"},
                         headers={"Authorization": aiohttp.encode_basic_auth("app", "wrong")}) as response:
        assert response.status == 401 and await response.json() == {"error": "invalid_client"}
    status, granted = await token(http, ehr)
    assert status == 200 and granted["token_type"] == "bearer" and granted["scope"] == "system/*.rs"
    assert granted["expires_in"] == 1  # whole seconds, rounded up
    assert (await get_json(http, f"{ehr.base}/Patient", headers=bearer(granted["access_token"])))[0] == 200
    ehr.expire_tokens()
    assert (await get_json(http, f"{ehr.base}/Patient", headers=bearer(granted["access_token"])))[0] == 401
    _, granted = await token(http, ehr)
    await asyncio.sleep(0.35)
    assert (await get_json(http, f"{ehr.base}/Patient", headers=bearer(granted["access_token"])))[0] == 401


async def test_private_key_jwt_client_assertions(start: Start, http: aiohttp.ClientSession) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS384"}
    ehr = await start(require_token=True, jwks={"svc": {"keys": [jwk]}})

    def assertion(signer: rsa.RSAPrivateKey = key, **claims: Any) -> dict[str, str]:
        now = int(time.time())
        body = {"iss": "svc", "sub": "svc", "aud": ehr.token_url, "exp": now + 300, "jti": str(uuid.uuid4()),
                **claims}
        return {"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": jwt.encode(body, signer, algorithm="RS384", headers={"kid": "k1"})}

    good = assertion()
    status, granted = await token(http, ehr, **good)
    assert status == 200
    assert (await get_json(http, f"{ehr.base}/Patient", headers=bearer(granted["access_token"])))[0] == 200
    refused = {"a reused jti": good, "another audience": assertion(aud="https://elsewhere/token"),
               "an exp past five minutes": assertion(exp=int(time.time()) + 600),
               "a sub not the client": assertion(sub="other"),
               "another key": assertion(rsa.generate_private_key(public_exponent=65537, key_size=2048))}
    for why, form in refused.items():
        assert await token(http, ehr, **form) == (401, {"error": "invalid_client"}), why


async def test_fail_answers_the_status_with_retry_after_in_both_forms(start: Start,
                                                                     http: aiohttp.ClientSession) -> None:
    ehr = await start()
    date = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    ehr.fail(429, retry_after="1")
    ehr.fail(503, 2, retry_after=date, path_contains="/Observation")
    answers = []
    for path in ("/Observation", "/Patient", "/Observation", "/Observation", "/Observation"):
        async with http.get(ehr.base + path) as response:
            answers.append((response.status, response.headers.get("Retry-After")))
            assert response.content_type == "application/fhir+json"
            assert (await response.json())["resourceType"] in ("OperationOutcome", "Bundle")
    assert answers == [(429, "1"), (200, None), (503, date), (503, date), (200, None)]


async def test_stall_holds_the_answer(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.stall(0.2)
    began = time.monotonic()
    assert (await get_json(http, f"{ehr.base}/Patient"))[0] == 200
    assert time.monotonic() - began >= 0.2
    ehr.stall(30)
    with pytest.raises(asyncio.TimeoutError):
        await get_json(http, f"{ehr.base}/Patient", timeout=aiohttp.ClientTimeout(total=0.1))
    # the fixture's stop() ends the 30 s stall at once


async def test_reset_drops_the_connection(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.reset(2)  # aiohttp resends an idempotent request once when the connection drops
    with pytest.raises(aiohttp.ClientConnectionError):
        await get_json(http, f"{ehr.base}/Patient")
    assert (await get_json(http, f"{ehr.base}/Patient"))[0] == 200
    assert [request.path for request in ehr.requests] == ["/Patient"] * 3


async def test_malformed_body_matching_the_page_links(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(page_size=1)
    ehr.put(patient("p1"))
    ehr.put(patient("p2"))
    ehr.malformed(path_contains="_getpages")
    _, first = await get_json(http, f"{ehr.base}/Patient")
    async with http.get(next_link(first)) as response:
        assert response.status == 200 and response.content_type == "application/fhir+json"
        with pytest.raises(json.JSONDecodeError):
            json.loads(await response.text())


async def kick_off(http: aiohttp.ClientSession, url: str, headers: dict[str, str] = ASYNC) -> str:
    async with http.get(url, headers=headers) as response:
        assert response.status == 202, await response.text()
        return response.headers["Content-Location"]


async def manifest(http: aiohttp.ClientSession, status_url: str, **options: Any) -> dict:
    """Polls the export's status until its manifest."""
    while True:
        async with http.get(status_url, **options) as response:
            if response.status == 200:
                return await response.json()
            assert response.status == 202


async def download(http: aiohttp.ClientSession, url: str, **options: Any) -> list[dict]:
    async with http.get(url, **options) as response:
        assert response.status == 200 and response.content_type == "application/fhir+ndjson"
        return [json.loads(line) for line in (await response.text()).splitlines()]


async def test_export_kick_off_poll_download_and_delete(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.export_file_lines = 2
    for n in range(3):
        ehr.put(patient(f"p{n}"), last_updated=f"2026-01-02T00:00:0{n}Z")
    ehr.put(patient("old"), last_updated=T0)
    ehr.put({"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}})
    assert (await get_json(http, f"{ehr.base}/$export"))[0] == 400  # no Prefer: respond-async
    status_url = await kick_off(http, f"{ehr.base}/$export?_type=Patient,Observation&_since=2026-01-02T00:00:00Z")
    assert status_url.startswith(f"{ehr.base}/$export-poll/")
    progress = []
    for _ in range(2):
        async with http.get(status_url) as response:
            progress.append((response.status, response.headers["X-Progress"], response.headers["Retry-After"]))
    assert progress == [(202, "0%", "0"), (202, "50%", "0")]
    found = await manifest(http, status_url)
    assert found["requiresAccessToken"] is False and found["error"] == [] and "_since" in found["request"]
    assert [(output["type"], output["count"]) for output in found["output"]] == [
        ("Observation", 1), ("Patient", 2), ("Patient", 1)]
    files = [await download(http, output["url"]) for output in found["output"]]
    assert [[resource["id"] for resource in lines] for lines in files] == [["o1"], ["p0", "p1"], ["p2"]]
    ehr.fail_export_file()
    async with http.get(found["output"][0]["url"]) as response:
        assert response.status == 500
    assert len(await download(http, found["output"][0]["url"])) == 1
    async with http.delete(status_url) as response:
        assert response.status == 202
    assert ehr.deleted_exports == [status_url]
    assert (await get_json(http, status_url))[0] == 404
    assert (await get_json(http, found["output"][0]["url"]))[0] == 404


async def test_export_retry_after_dates_and_a_failed_job(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    ehr.export_retry_after_date = True
    ehr.export_polls = 3
    status_url = await kick_off(http, f"{ehr.base}/$export")
    retry_after = []
    for _ in range(3):
        async with http.get(status_url) as response:
            retry_after.append(response.headers["Retry-After"])
    assert retry_after[0] == retry_after[2] == "0"
    assert parsedate_to_datetime(retry_after[1]) <= datetime.now(timezone.utc) + timedelta(seconds=1)
    assert (await manifest(http, status_url))["output"] == []
    ehr.export_fail = True
    ehr.export_polls = 0
    status, outcome = await get_json(http, await kick_off(http, f"{ehr.base}/$export"))
    assert status == 500 and outcome["resourceType"] == "OperationOutcome"


async def test_group_and_patient_exports_follow_references(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start()
    for n in range(1, 4):
        ehr.put(patient(f"p{n}"))
    ehr.put({"resourceType": "Group", "id": "g", "member": [{"entity": {"reference": "Patient/p1"}},
                                                            {"entity": {"reference": "Patient/p2"}}]})
    ehr.put({"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}})
    ehr.put({"resourceType": "Observation", "id": "o3", "subject": {"reference": "Patient/p3"}})
    ehr.put({"resourceType": "AllergyIntolerance", "id": "a2", "patient": {"reference": f"{ehr.base}/Patient/p2"}})
    ehr.put({"resourceType": "Practitioner", "id": "dr"})

    async def exported(path: str) -> dict[str, list[str]]:
        found = await manifest(http, await kick_off(http, ehr.base + path))
        return {output["type"]: [resource["id"] for resource in await download(http, output["url"])]
                for output in found["output"]}

    assert await exported("/Group/g/$export") == {"AllergyIntolerance": ["a2"], "Observation": ["o1"],
                                                  "Patient": ["p1", "p2"]}
    assert await exported("/Patient/$export?_type=Observation") == {"Observation": ["o1", "o3"]}
    assert set(await exported("/$export")) == {"AllergyIntolerance", "Group", "Observation", "Patient",
                                                "Practitioner"}
    assert (await get_json(http, f"{ehr.base}/Group/none/$export", headers=ASYNC))[0] == 404


async def test_an_export_under_a_token(start: Start, http: aiohttp.ClientSession) -> None:
    ehr = await start(require_token=True, clients={"app": "s3cret"})
    ehr.put(patient("p1"))
    async with http.get(f"{ehr.base}/$export", headers=ASYNC) as response:
        assert response.status == 401
    authorized = bearer((await token(http, ehr))[1]["access_token"])
    found = await manifest(http, await kick_off(http, f"{ehr.base}/$export", {**ASYNC, **authorized}),
                           headers=authorized)
    assert found["requiresAccessToken"] is True
    assert (await get_json(http, found["output"][0]["url"]))[0] == 401
    assert await download(http, found["output"][0]["url"], headers=authorized) == [ehr.current("Patient", "p1")]
