"""SMART App Launch: the authorization code flow with PKCE (S256), for standalone and EHR launch (its pages, a
minimal login, patient picker and consent page, are server/launch_pages.py); id tokens (`openid fhirUser`) and
refresh tokens (`offline_access`, `online_access`).

1. `GET /auth/authorize?response_type=code&client_id&redirect_uri&scope&state&aud&code_challenge…[&launch]`:
   checked (registered redirect URI, audience = the base URL, S256), then the login page.
2. The login form posts back; a right password opens a consent page (with a patient picker when the app asks
   for `launch/patient`, the user is not a patient and no EHR launch gave one), held by a single-use session.
3. Approving redirects to `redirect_uri?code=…&state=…`; the code (single use, 60 s) and the PKCE verifier are
   exchanged at the token endpoint (server/oauth.py).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any

import jwt
from hearth.security.authority import AuthError, Authority
from hearth.security.scopes import split

CODE_LIFETIME = 60
SESSION_LIFETIME = 600
ACCESS_LIFETIME = 3600
REFRESH_LIFETIME = {"offline_access": 30 * 86400, "online_access": 86400}
_AUTHORIZE_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
                     "code_challenge_method", "launch", "nonce")


class Launches:
    def __init__(self, authority: Authority, base_url: str) -> None:
        self.authority = authority
        self.base_url = base_url

    # -- the browser side's steps (the pages are server/launch_pages.py) ----------------------------------

    async def checked(self, form: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
        """The authorization request's parameters and its client; AuthError when the request cannot be trusted
        (then nothing may be sent to its redirect URI)."""
        asked = {name: form[name] for name in _AUTHORIZE_PARAMS if form.get(name)}
        client = await self.authority.client(asked.get("client_id", ""))
        if client is None:
            raise AuthError("invalid_request", "Unknown client_id")
        if asked.get("redirect_uri") not in client.get("redirect_uris", []):
            raise AuthError("invalid_request", "redirect_uri is not registered for this client")
        if asked.get("response_type") != "code":
            raise AuthError("unsupported_response_type", "response_type must be code")
        if asked.get("aud", "").rstrip("/") != self.base_url:
            raise AuthError("invalid_request", f"aud must be this server's base URL, {self.base_url}")
        if asked.get("code_challenge_method") != "S256" or not asked.get("code_challenge"):
            raise AuthError("invalid_request", "PKCE is required: code_challenge with code_challenge_method=S256")
        asked.setdefault("scope", "")
        return asked, client

    async def signed_in(self, asked: dict[str, str], user: dict[str, Any]) -> tuple[str, bool]:
        """A single-use consent session for a user who signed in, and whether a patient must be picked;
        AuthError for an unknown launch."""
        launch = await self.authority.records.get("launch", asked["launch"]) if asked.get("launch") else None
        if asked.get("launch") and launch is None:
            raise AuthError("invalid_request", "Unknown launch")
        patient = (launch or {}).get("patient") or user.get("patient")
        session = secrets.token_urlsafe(24)
        await self.authority.records.put("session", session, {"asked": asked, "user": user["name"],
                                                              "patient": patient,
                                                              "encounter": (launch or {}).get("encounter")},
                                         time.time() + SESSION_LIFETIME)
        return session, "launch/patient" in split(asked["scope"]) and patient is None

    async def decided(self, session_id: str, approved: bool, picked: str | None) -> tuple[dict[str, str] | None,
                                                                                         dict[str, str]]:
        """(the authorization request, the parameters to redirect with: a code, or an error); (None, {}) for a
        session that expired or was used."""
        session = await self.authority.records.take("session", session_id)
        if session is None:
            return None, {}
        asked = session["asked"]
        if not approved:
            return asked, {"error": "access_denied", "error_description": "The user denied access"}
        patient = session["patient"] or (picked or "").removeprefix("Patient/").strip() or None
        if "launch/patient" in split(asked["scope"]) and patient is None:
            return asked, {"error": "invalid_request", "error_description": "No patient was chosen"}
        code = secrets.token_urlsafe(32)
        await self.authority.records.put("code", code, {**session, "patient": patient, "asked": asked},
                                         time.time() + CODE_LIFETIME)
        return asked, {"code": code}

    # -- the token endpoint's side -----------------------------------------------------------------------

    async def exchange(self, client: dict[str, Any], grant_type: str, form: dict[str, str]) -> dict[str, Any]:
        if grant_type == "refresh_token":
            return await self._refresh(client, form)
        code = await self.authority.records.take("code", form.get("code", ""))
        if code is None or code["asked"]["client_id"] != client["client_id"]:
            raise AuthError("invalid_grant", "Unknown, used or expired authorization code")
        asked = code["asked"]
        if form.get("redirect_uri") != asked["redirect_uri"]:
            raise AuthError("invalid_grant", "redirect_uri differs from the authorization request's")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not secrets.compare_digest(challenge, asked["code_challenge"]):
            raise AuthError("invalid_grant", "code_verifier does not match the code_challenge (PKCE)")
        return await self._tokens(client, asked["scope"], code["user"], code.get("patient"), code.get("encounter"),
                                  asked.get("nonce"), with_refresh=True)

    async def _tokens(self, client: dict[str, Any], scope: str, user_name: str, patient: str | None,
                      encounter: str | None, nonce: str | None, with_refresh: bool) -> dict[str, Any]:
        user = await self.authority.records.get("user", user_name)
        if user is None:
            raise AuthError("invalid_grant", "The user no longer exists")
        issued = await self.authority.issue(client, scope, user=user, patient=patient, expires=ACCESS_LIFETIME)
        granted = split(issued.claims["scope"])
        answer: dict[str, Any] = {"access_token": issued.token, "token_type": "bearer",
                                  "expires_in": issued.expires_in, "scope": issued.claims["scope"]}
        if patient:
            answer.update(patient=patient, need_patient_banner=user["role"] != "patient")
        if encounter:
            answer["encounter"] = encounter
        if "openid" in granted and "fhirUser" in granted and user.get("fhir_user"):
            answer["id_token"] = self._id_token(client, user, nonce)
        lifetime = next((REFRESH_LIFETIME[s] for s in ("offline_access", "online_access") if s in granted), None)
        if with_refresh and lifetime:
            refresh = secrets.token_urlsafe(32)
            await self.authority.records.put("refresh", refresh, {
                "client_id": client["client_id"], "scope": issued.claims["scope"], "user": user_name,
                "patient": patient, "encounter": encounter}, time.time() + lifetime)
            answer["refresh_token"] = refresh
        return answer

    def _id_token(self, client: dict[str, Any], user: dict[str, Any], nonce: str | None) -> str:
        now = int(time.time())
        claims = {"iss": self.base_url, "sub": user["name"], "aud": client["client_id"], "iat": now,
                  "exp": now + ACCESS_LIFETIME, "fhirUser": f"{self.base_url}/{user['fhir_user']}"}
        if nonce:
            claims["nonce"] = nonce
        return self.authority.keys.sign(claims)

    async def _refresh(self, client: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
        record = await self.authority.records.get("refresh", form.get("refresh_token", ""))
        if record is None or record["client_id"] != client["client_id"]:
            raise AuthError("invalid_grant", "Unknown, revoked or expired refresh token")
        scope = form.get("scope") or record["scope"]
        if not set(split(scope)) <= set(split(record["scope"])):
            raise AuthError("invalid_scope", "A refresh may only narrow the scopes granted")
        answer = await self._tokens(client, scope, record["user"], record.get("patient"), record.get("encounter"),
                                    None, with_refresh=False)
        answer["refresh_token"] = form["refresh_token"]
        return answer

    async def revoke(self, client: dict[str, Any], token: str) -> None:
        record = await self.authority.records.get("refresh", token)
        if record is not None:
            if record["client_id"] == client["client_id"]:
                await self.authority.records.delete("refresh", token)
            return
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            await self.authority.grant_for(token)  # only tokens Hearth issued and still valid
        except (jwt.PyJWTError, AuthError):
            return
        if claims.get("client_id") == client["client_id"]:
            await self.authority.revoke(claims["jti"], float(claims["exp"]) + 60)
