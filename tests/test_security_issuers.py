"""Tokens of a site's own authorization server (a fake IdP that behaves like one: OpenID discovery, a JWKS that
rotates, RFC 7662 introspection): accepted within their audience, time and scopes, refused otherwise."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import BASE, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings
from security_helpers import seed

INTROSPECTION_CLIENT = ("hearth", "s3cret")


class FakeIdP:
    """An IdP on 127.0.0.1: discovery, keys (`rotate()` replaces them), introspection of the tokens in `opaque`."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, rsa.RSAPrivateKey]] = []
        self.opaque: dict[str, dict] = {}
        self.rotate()

    def rotate(self) -> str:
        kid = f"key-{len(self.keys) + 1}"
        self.keys = [(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))]
        return kid

    def token(self, claims: dict, issuer: str | None = None) -> str:
        kid, key = self.keys[0]
        now = int(time.time())
        body = {"iss": issuer or self.url, "aud": BASE, "iat": now, "exp": now + 300, "sub": "app-7", **claims}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    async def start(self) -> "FakeIdP":
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/keys", self._jwks)
        app.router.add_post("/introspect", self._introspect)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        return self

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/keys"})

    async def _jwks(self, request: web.Request) -> web.Response:
        keys = [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "RS256"}
                for kid, key in self.keys]
        return web.json_response({"keys": keys})

    async def _introspect(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != httpx.BasicAuth(*INTROSPECTION_CLIENT)._auth_header:
            return web.json_response({"error": "invalid_client"}, status=401)
        token = (await request.post()).get("token")
        return web.json_response(self.opaque.get(token, {"active": False}))


@pytest.fixture
async def idp():
    server = await FakeIdP().start()
    yield server
    await server.runner.cleanup()


@pytest.fixture
async def hearth(backend: str, tmp_path: Path, idp):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, auth="required", auth_issuers=idp.url,
                        auth_introspection=f"{idp.url}/introspect",
                        auth_introspection_client=":".join(INTROSPECTION_CLIENT))
    app = create_app(settings, make_store(backend, tmp_path))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        await seed(client, {"Authorization": f"Bearer {idp.token({'scope': 'system/*.cruds'})}"})
        yield client
    await app.shutdown()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_issuers_jwt_is_held_to_its_scopes_audience_and_time(hearth, idp):
    token = idp.token({"scope": "system/Patient.rs"})
    assert (await hearth.get("/Patient/p1", headers=bearer(token))).status_code == 200
    assert (await hearth.get("/Observation/o1-lab", headers=bearer(token))).status_code == 403
    now = int(time.time())
    refused = {
        "another audience": idp.token({"scope": "system/Patient.rs", "aud": "https://other.example/fhir"}),
        "expired past the skew": idp.token({"scope": "system/Patient.rs", "exp": now - 120}),
        "not yet valid": idp.token({"scope": "system/Patient.rs", "nbf": now + 120}),
        "an issuer not trusted": idp.token({"scope": "system/Patient.rs"}, issuer="https://evil.example"),
    }
    for why, token in refused.items():
        response = await hearth.get("/Patient/p1", headers=bearer(token))
        assert response.status_code == 401, why
    within_skew = idp.token({"scope": "system/Patient.rs", "exp": now - 20})
    assert (await hearth.get("/Patient/p1", headers=bearer(within_skew))).status_code == 200


async def test_patient_context_and_scp_lists_and_a_rotated_key(hearth, idp):
    token = idp.token({"scp": ["patient/Observation.rs"], "patient": "p1", "client_id": "phr"})
    found = (await hearth.get("/Observation", headers=bearer(token))).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {"o1-lab", "o1-vital"}
    idp.rotate()
    rotated = idp.token({"scope": "system/Patient.rs"})
    assert (await hearth.get("/Patient/p2", headers=bearer(rotated))).status_code == 200


async def test_opaque_tokens_through_introspection(hearth, idp):
    idp.opaque["opaque-good"] = {"active": True, "scope": "system/Observation.rs", "client_id": "svc",
                                 "exp": int(time.time()) + 300}
    idp.opaque["opaque-elsewhere"] = {"active": True, "scope": "system/*.rs", "aud": "https://other.example"}
    assert (await hearth.get("/Observation/o2-lab", headers=bearer("opaque-good"))).status_code == 200
    assert (await hearth.get("/Patient/p2", headers=bearer("opaque-good"))).status_code == 403
    assert (await hearth.get("/Patient/p2", headers=bearer("opaque-unknown"))).status_code == 401
    assert (await hearth.get("/Patient/p2", headers=bearer("opaque-elsewhere"))).status_code == 401
