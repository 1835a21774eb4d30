"""The HTTP edges a hostile or an ordinary client finds: Host, proxies, compression, formats, operations."""

from __future__ import annotations

import gzip
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings

PATIENT = {"resourceType": "Patient", "name": [{"family": "Chalmers", "given": ["Peter"]}]}


async def _client(tmp_path: Path, backend: str, base: str = BASE, **settings: object):
    app = create_app(Settings(storage=str(tmp_path / "h.db"), base_url=base, **settings), make_store(backend, tmp_path))
    await app.startup()
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base)


# --- Host ---------------------------------------------------------------------------------------------------

async def test_a_host_hearth_does_not_serve_is_refused(client):
    refused = await client.get("/metadata", headers={"Host": "attacker.example"})
    assert refused.status_code == 400
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "security"
    assert "attacker.example" in outcome["issue"][0]["diagnostics"]
    assert (await client.get("/metadata", headers={"Host": "hearth.test:443"})).status_code == 200


async def test_a_loopback_base_url_answers_every_loopback_name_and_nothing_else(tmp_path, backend):
    app, client = await _client(tmp_path, backend, "http://127.0.0.1:8080")
    try:
        for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080"):
            assert (await client.get("/Patient", headers={"Host": host})).status_code == 200, host
        rebound = await client.get("/Patient", headers={"Host": "rebind.attacker.example:8080"})
        assert rebound.status_code == 400
    finally:
        await client.aclose()
        await app.shutdown()


async def test_allowed_hosts_add_names_and_a_star_allows_any(tmp_path, backend):
    app, client = await _client(tmp_path, backend, allowed_hosts="fhir.example.org, Other.Example")
    try:
        for host in ("fhir.example.org", "other.example:8443", "hearth.test"):
            assert (await client.get("/Patient", headers={"Host": host})).status_code == 200, host
        assert (await client.get("/Patient", headers={"Host": "third.example"})).status_code == 400
    finally:
        await client.aclose()
        await app.shutdown()
    app, client = await _client(tmp_path, backend, allowed_hosts="*")
    try:
        assert (await client.get("/Patient", headers={"Host": "anything.example"})).status_code == 200
    finally:
        await client.aclose()
        await app.shutdown()


def test_a_wildcard_listen_address_gives_localhost_links_not_0_0_0_0():
    assert Settings(host="0.0.0.0", port=9000).public_base_url == "http://localhost:9000"
    assert Settings(host="::", port=9000).public_base_url == "http://localhost:9000"
    assert Settings(host="::1", port=9000).public_base_url == "http://[::1]:9000"
    assert Settings(host="0.0.0.0", base_url="https://fhir.example.org/r4/").public_base_url == \
        "https://fhir.example.org/r4"


# --- proxies ------------------------------------------------------------------------------------------------

async def test_forwarded_host_is_believed_only_from_a_trusted_proxy(tmp_path, backend):
    forwarded = {"Host": "10.0.0.5:8080", "Forwarded": 'for=203.0.113.9;proto=https;host="hearth.test"'}
    app, client = await _client(tmp_path, backend)  # no trusted proxy: the Host header stands
    try:
        assert (await client.get("/Patient", headers=forwarded)).status_code == 400
    finally:
        await client.aclose()
        await app.shutdown()
    # httpx's ASGI transport connects from 127.0.0.1
    app, client = await _client(tmp_path, backend, trusted_proxies="127.0.0.0/8")
    try:
        assert (await client.get("/Patient", headers=forwarded)).status_code == 200
        x_forwarded = {"Host": "10.0.0.5", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Host": "hearth.test"}
        assert (await client.get("/Patient", headers=x_forwarded)).status_code == 200
        # a client's own Forwarded element, before the proxy's, is not believed: the proxy's hop wins
        spoofed = {"Host": "10.0.0.5", "Forwarded": 'host="hearth.test", for=203.0.113.9;host=evil.example'}
        assert (await client.get("/Patient", headers=spoofed)).status_code == 400
    finally:
        await client.aclose()
        await app.shutdown()


# --- compression --------------------------------------------------------------------------------------------

async def test_responses_are_gzipped_when_the_client_accepts_it(client):
    plain = await client.get("/metadata", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    async with client.stream("GET", "/metadata", headers={"Accept-Encoding": "gzip"}) as raw:
        assert raw.headers["content-encoding"] == "gzip" and "Accept-Encoding" in raw.headers["vary"]
        compressed = b"".join([chunk async for chunk in raw.aiter_raw()])  # as sent, not decoded by httpx
    assert len(compressed) < len(plain.content) / 5
    assert gzip.decompress(compressed) == plain.content
    small = await client.get("/Patient/unknown", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers  # one TCP segment: not worth compressing


async def test_gzipped_xml(client):
    created = (await client.post("/Patient", json=PATIENT, headers=FHIR_JSON)).json()
    xml = await client.get("/Patient", params={"_id": created["id"], "_format": "xml"},
                           headers={"Accept-Encoding": "gzip"})
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/fhir+xml")
    assert b"Chalmers" in xml.content  # decoded by httpx


# --- formats and headers ------------------------------------------------------------------------------------

async def test_format_written_literally_with_a_plus(client):
    for raw in ("application/fhir+json", "application/fhir json", "application%2Ffhir%2Bjson"):
        response = await client.get(f"/metadata?_format={raw.replace('+', '%2B') if '%' not in raw else raw}")
        assert response.status_code == 200, raw
    literal = await client.get("/metadata?_format=application/fhir+json")  # `+` decodes to a space
    assert literal.status_code == 200 and literal.headers["content-type"].startswith("application/fhir+json")
    xml = await client.get("/metadata?_format=application/fhir+xml")
    assert xml.status_code == 200 and xml.headers["content-type"].startswith("application/fhir+xml")


@pytest.mark.parametrize("header", ["If-Match", "If-None-Match"])
async def test_an_etag_with_thousands_of_digits_is_not_a_500(client, header):
    created = (await client.post("/Patient", json=PATIENT, headers=FHIR_JSON)).json()
    huge = 'W/"' + "9" * 5000 + '"'
    if header == "If-Match":
        response = await client.put(f"/Patient/{created['id']}", json=created, headers={**FHIR_JSON, header: huge})
        assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    else:
        response = await client.get(f"/Patient/{created['id']}", headers={header: huge})
        assert response.status_code == 200


# --- operations ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", "/Patient/$frobnicate"), ("GET", "/Patient/123/$nothing"), ("GET", "/ValueSet/$expand-all"),
    ("POST", "/$import"), ("POST", "/Patient/$match"), ("GET", "/Patient/123/_history/1/$everything"),
])
async def test_an_unknown_operation_is_not_supported_not_not_found(client, method, path):
    response = await client.request(method, path)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["code"] == "not-supported" and path.rsplit("/", 1)[1] in issue["diagnostics"]


# --- conditional create from the URL ------------------------------------------------------------------------

async def test_search_parameters_on_a_create_are_its_condition(client):
    body = {**PATIENT, "identifier": [{"system": "http://example.org/mrn", "value": "12345"}]}
    url = "/Patient?identifier=http://example.org/mrn|12345"
    first = await client.post(url, json=body, headers=FHIR_JSON)
    again = await client.post(url, json=body, headers=FHIR_JSON)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    found = (await client.get("/Patient", params={"identifier": "http://example.org/mrn|12345"})).json()
    assert found["total"] == 1
    same = await client.post(url, json=body, headers={**FHIR_JSON, "If-None-Exist":
                                                      "identifier=http://example.org/mrn|12345"})
    assert same.status_code == 200
    differ = await client.post(url, json=body, headers={**FHIR_JSON, "If-None-Exist": "family=other"})
    assert differ.status_code == 400 and "If-None-Exist" in differ.json()["issue"][0]["diagnostics"]
    formatted = await client.post("/Patient?_format=json", json=PATIENT, headers=FHIR_JSON)
    assert formatted.status_code == 201  # formatting parameters are no condition
    unknown = await client.post("/Patient?nonsense=1", json=PATIENT, headers=FHIR_JSON)
    assert unknown.status_code == 400  # a condition is strict: an unknown parameter would match everything
