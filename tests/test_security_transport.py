"""CORS for browser SMART apps, the open mode on loopback, and operating the authorization server from the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import BASE, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings

ORIGIN = "https://app.example"


@pytest.fixture
async def browser_app(backend: str, tmp_path: Path):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, cors_origins=ORIGIN)
    app = create_app(settings, make_store(backend, tmp_path))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield app, client
    await app.shutdown()


async def test_cors_preflight_and_exposed_headers(browser_app):
    _, client = browser_app
    preflight = await client.options("/Patient", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, prefer"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    created = await client.post("/Patient", json={"resourceType": "Patient"},
                                headers={"Origin": ORIGIN, "Content-Type": "application/fhir+json"})
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == ORIGIN
    assert "location" in created.headers["access-control-expose-headers"].lower()
    other = await client.options("/Patient", headers={"Origin": "https://evil.example",
                                                      "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in other.headers


def test_a_wildcard_origin_is_refused_off_loopback():
    with pytest.raises(ValueError, match="HEARTH_CORS_ORIGINS"):
        create_app(Settings(host="0.0.0.0", cors_origins="*"))


def test_auth_is_required_by_default_off_loopback():
    assert Settings(host="0.0.0.0").auth_required and Settings(host="10.1.2.3").auth_required
    assert not Settings(host="127.0.0.1").auth_required
    assert Settings(host="127.0.0.1", auth="required").auth_required
    assert not Settings(host="0.0.0.0", auth="open").auth_required
    with pytest.raises(ValueError):
        Settings(auth="maybe").auth_required


async def test_open_on_loopback_says_so_and_still_enforces_presented_tokens(browser_app):
    app, client = browser_app
    assert (await client.get("/Patient")).status_code == 200  # no token needed
    security = (await client.get("/metadata")).json()["rest"][0]["security"]
    assert "authorization is OFF" in security["description"]
    registered = await app.authority.add_client("narrow", "system/Observation.rs", secret=True)
    issued = await app.authority.issue(await app.authority.client("narrow"), "system/Observation.rs")
    narrow = await client.get("/Patient", headers={"Authorization": f"Bearer {issued.token}"})
    assert narrow.status_code == 403 and registered["client_secret"]


def hearth(tmp_path: Path, *args: str) -> dict:
    command = [sys.executable, "-m", "hearth.server.cli", *args, "--storage", str(tmp_path / "cli.db"),
               "--base-url", BASE]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_the_cli_registers_clients_and_issues_tokens_the_server_accepts(tmp_path):
    client = hearth(tmp_path, "clients", "add", "ops", "--scope", "system/*.rs", "--secret",
                    "--mask", "Patient.name")
    assert client["client_id"] == "ops" and client["client_secret"] and client["mask"] == ["Patient.name"]
    assert [c["client_id"] for c in hearth(tmp_path, "clients", "list")] == ["ops"]
    assert "secret_sha256" not in hearth(tmp_path, "clients", "list")[0]
    user = hearth(tmp_path, "users", "add", "pat", "--role", "patient", "--patient", "Patient/p1")
    assert user["patient"] == "p1" and user["password"]
    token = hearth(tmp_path, "tokens", "issue", "--client", "ops", "--scope", "system/Patient.rs system/Foo.x")
    assert token["scope"] == "system/Patient.rs"
    settings = Settings(storage=str(tmp_path / "cli.db"), base_url=BASE, auth="required")
    app = create_app(settings)  # on the database the CLI wrote
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http:
            bearer = {"Authorization": f"Bearer {token['access_token']}"}
            assert (await http.get("/Patient", headers=bearer)).status_code == 200
            assert (await http.get("/Observation", headers=bearer)).status_code == 403
    finally:
        await app.shutdown()
    command = [sys.executable, "-m", "hearth.server.cli", "audit", "export", "--storage", str(tmp_path / "cli.db")]
    exported = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    events = [json.loads(line) for line in exported]
    assert len(events) == 2 and all(e["resourceType"] == "AuditEvent" for e in events)
    assert [e["outcome"] for e in events] == ["0", "4"]  # the search, then the refused one
    assert hearth(tmp_path, "keys", "rotate")["kid"]
    assert len(hearth(tmp_path, "keys", "list")) == 2
    assert hearth(tmp_path, "clients", "remove", "ops") == {"removed": True}
