"""The built-in authorization server, driven by a real OAuth client library (Authlib): SMART Backend Services
(private_key_jwt, client_secret_basic), a standalone and an EHR launch with PKCE through the login and consent
pages, refresh tokens, introspection and revocation, and role ceilings."""

from __future__ import annotations

import json
import re
import time
import warnings

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import BASE
from security_helpers import secured  # noqa: F401 (fixture)

with warnings.catch_warnings():  # Authlib announces a future move of its httpx module
    warnings.simplefilter("ignore")
    from authlib.common.security import generate_token
    from authlib.integrations.httpx_client import AsyncOAuth2Client
    from authlib.oauth2.rfc7523 import PrivateKeyJWT
    from joserfc.jwk import ECKey, RSAKey

TOKEN_URL = f"{BASE}/auth/token"
REDIRECT = "https://app.example/callback"


def key_pair(kind: str) -> tuple[str, dict]:
    """A private key (PEM) and its public JWKS entry, for RS384 or ES384."""
    if kind == "RS384":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    else:
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return pem, {**jwk, "kid": f"{kind}-key", "alg": kind}


def oauth_client(app, **options) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(transport=httpx.ASGITransport(app=app), base_url=BASE, **options)


def assertion_auth(alg: str) -> PrivateKeyJWT:
    # SMART: an assertion lives at most five minutes (Authlib's default is an hour)
    return PrivateKeyJWT(TOKEN_URL, alg=alg, headers={"kid": f"{alg}-key"}, claims={"exp": int(time.time()) + 240})


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_backend_services_with_private_key_jwt(secured, alg):
    pem, jwk = key_pair(alg)
    await secured.app.authority.add_client("backend", "system/Patient.rs system/Observation.rs", jwks={"keys": [jwk]})
    signing_key = (RSAKey if alg == "RS384" else ECKey).import_key(pem)
    async with oauth_client(secured.app, client_id="backend", client_secret=signing_key,
                            token_endpoint_auth_method="private_key_jwt") as oauth:
        oauth.register_client_auth_method(assertion_auth(alg))
        token = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials",
                                        scope="system/Patient.rs system/Practitioner.rs")
        assert token["scope"] == "system/Patient.rs" and token["expires_in"] <= 300
        assert (await oauth.get(f"{BASE}/Patient/p2")).status_code == 200
        assert (await oauth.get(f"{BASE}/Practitioner/dr")).status_code == 403
    # the same assertion twice: a replay
    assertion = jwt.encode({"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": int(time.time()) + 60,
                            "jti": "once"}, pem, algorithm=alg, headers={"kid": jwk["kid"]})
    form = {"grant_type": "client_credentials", "scope": "system/Patient.rs", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    client = secured.client
    assert (await client.post("/auth/token", data=form)).status_code == 200
    replayed = await client.post("/auth/token", data=form)
    assert replayed.status_code == 401 and "replay" in replayed.json()["error_description"]
    elsewhere = jwt.encode({"iss": "backend", "sub": "backend", "aud": "https://other.example/token",
                            "exp": int(time.time()) + 60, "jti": "two"}, pem, algorithm=alg,
                           headers={"kid": jwk["kid"]})
    refused = await client.post("/auth/token", data={**form, "client_assertion": elsewhere})
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    too_long = jwt.encode({"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": int(time.time()) + 3600,
                           "jti": "three"}, pem, algorithm=alg, headers={"kid": jwk["kid"]})
    assert (await client.post("/auth/token", data={**form, "client_assertion": too_long})).status_code == 401


async def test_client_secret_basic_introspection_and_revocation(secured):
    registered = await secured.app.authority.add_client("service", "system/*.rs", secret=True)
    secret = registered["client_secret"]
    async with oauth_client(secured.app, client_id="service", client_secret=secret,
                            token_endpoint_auth_method="client_secret_basic") as oauth:
        token = await oauth.fetch_token(TOKEN_URL, grant_type="client_credentials", scope="system/Observation.rs")
        assert (await oauth.get(f"{BASE}/Observation/o1-lab")).status_code == 200
    client = secured.client
    wrong = await client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                              auth=("service", "not-the-secret"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    access = token["access_token"]
    active = (await client.post("/auth/introspect", data={"token": access}, auth=("service", secret))).json()
    assert active["active"] is True and active["scope"] == "system/Observation.rs" and active["client_id"] == "service"
    assert (await client.post("/auth/introspect", data={"token": access})).status_code == 401  # clients only
    assert (await client.post("/auth/revoke", data={"token": access}, auth=("service", secret))).status_code == 200
    revoked = await client.get("/Observation/o1-lab", headers={"Authorization": f"Bearer {access}"})
    assert revoked.status_code == 401
    inactive = (await client.post("/auth/introspect", data={"token": access}, auth=("service", secret))).json()
    assert inactive == {"active": False}


async def browse(client: httpx.AsyncClient, url: str, username: str, password: str,
                 fields: dict[str, str] | None = None, decision: str = "approve") -> httpx.Response:
    """What a browser does: open the authorize URL, sign in, answer the consent page (its fields added)."""
    login = await client.get(url)
    assert login.status_code == 200 and "Sign in" in login.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', login.text))
    hidden = {name: value.replace("&amp;", "&") for name, value in hidden.items()}
    consent = await client.post("/auth/authorize", data={**hidden, "username": username, "password": password})
    assert consent.status_code == 200 and "Allow access?" in consent.text, consent.text
    session = re.search(r'name="session" value="([^"]+)"', consent.text).group(1)
    return await client.post("/auth/authorize", data={"session": session, "decision": decision, **(fields or {})})


async def test_standalone_patient_launch_with_pkce_refresh_and_id_token(secured):
    authority = secured.app.authority
    await authority.add_client("web-app", "patient/*.rs openid fhirUser launch/patient offline_access",
                               public=True, redirect_uris=(REDIRECT,))
    await authority.add_user("pat", "patient", patient="Patient/p1", password="correct horse")
    verifier = generate_token(48)
    async with oauth_client(secured.app, client_id="web-app", redirect_uri=REDIRECT,
                            scope="launch/patient patient/*.rs openid fhirUser offline_access",
                            code_challenge_method="S256", token_endpoint_auth_method="none") as oauth:
        url, state = oauth.create_authorization_url(f"{BASE}/auth/authorize", code_verifier=verifier, aud=BASE)
        redirected = await browse(secured.client, url, "pat", "correct horse")
        assert redirected.status_code == 302
        location = redirected.headers["location"]
        assert location.startswith(REDIRECT) and f"state={state}" in location
        token = await oauth.fetch_token(TOKEN_URL, authorization_response=location, code_verifier=verifier)
        assert token["patient"] == "p1" and "refresh_token" in token
        identity = jwt.decode(token["id_token"], options={"verify_signature": False})
        assert identity["fhirUser"] == f"{BASE}/Patient/p1" and identity["aud"] == "web-app"
        assert (await oauth.get(f"{BASE}/Patient/p1")).status_code == 200
        assert (await oauth.get(f"{BASE}/Patient/p2")).status_code == 404
        refreshed = await oauth.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"] and refreshed["patient"] == "p1"
    # the code is single use, and PKCE binds it to the verifier
    url, _ = oauth.create_authorization_url(f"{BASE}/auth/authorize", code_verifier=verifier, aud=BASE)
    code = re.search(r"code=([^&]+)", (await browse(secured.client, url, "pat", "correct horse"))
                     .headers["location"]).group(1)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "client_id": "web-app"}
    wrong = await secured.client.post("/auth/token", data={**form, "code_verifier": "x" * 50})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


async def test_ehr_launch_and_denial_and_role_ceilings(secured):
    authority = secured.app.authority
    await authority.add_client("ehr-app", "user/*.cruds patient/*.rs launch openid fhirUser system/*.rs",
                               public=True, redirect_uris=(REDIRECT,))
    await authority.add_user("doc", "clinician", fhir_user="Practitioner/dr", password="pw-doc")
    await authority.records.put("launch", "L1", {"patient": "p2", "encounter": None}, time.time() + 60)
    verifier = generate_token(48)
    async with oauth_client(secured.app, client_id="ehr-app", redirect_uri=REDIRECT,
                            scope="launch patient/Observation.rs user/Practitioner.rs system/*.rs",
                            code_challenge_method="S256", token_endpoint_auth_method="none") as oauth:
        url, _ = oauth.create_authorization_url(f"{BASE}/auth/authorize", code_verifier=verifier, aud=BASE,
                                                launch="L1")
        location = (await browse(secured.client, url, "doc", "pw-doc")).headers["location"]
        token = await oauth.fetch_token(TOKEN_URL, authorization_response=location, code_verifier=verifier)
        assert token["patient"] == "p2" and token["need_patient_banner"] is True
        assert "system/" not in token["scope"]  # a clinician's role allows no system/ scope
        assert (await oauth.get(f"{BASE}/Observation/o2-lab")).status_code == 200
        assert (await oauth.get(f"{BASE}/Observation/o1-lab")).status_code == 404
        url, _ = oauth.create_authorization_url(f"{BASE}/auth/authorize", code_verifier=verifier, aud=BASE)
        denied = await browse(secured.client, url, "doc", "pw-doc", decision="deny")
        assert "error=access_denied" in denied.headers["location"]
    wrong_password = await secured.client.post("/auth/authorize", data={
        "response_type": "code", "client_id": "ehr-app", "redirect_uri": REDIRECT, "scope": "launch",
        "aud": BASE, "code_challenge": "x" * 43, "code_challenge_method": "S256", "username": "doc",
        "password": "nope"})
    assert wrong_password.status_code == 401 and "Wrong user name or password" in wrong_password.text
    unregistered = await secured.client.get("/auth/authorize", params={
        "response_type": "code", "client_id": "ehr-app", "redirect_uri": "https://evil.example/",
        "aud": BASE, "code_challenge": "x" * 43, "code_challenge_method": "S256"})
    assert unregistered.status_code == 400  # never redirect to an unregistered URI
