"""SMART App Launch: the authorization code flow with PKCE (S256), for standalone and EHR launch, with a minimal
server-rendered login, patient picker and consent page; id tokens (`openid fhirUser`) and refresh tokens
(`offline_access`, `online_access`).

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
import html
import secrets
import time
from typing import Any
from urllib.parse import urlencode

import jwt
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

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

    # -- the browser side --------------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        from hearth.server.oauth import _form  # the one form reader, bounded
        try:
            form = await _form(request)
        except AuthError as error:
            return _page("Error", f"<p>{html.escape(error.description)}</p>", 400)
        if "session" in form:
            return await self._decide(form)
        try:
            asked, client = await self._checked(form)
        except AuthError as error:  # no trustworthy redirect URI: tell the user, not the app
            return _page("Error", f"<p>{html.escape(error.description)}</p>", 400)
        if "username" not in form:
            return _login_page(asked)
        user = await self.authority.check_password(form.get("username", ""), form.get("password", ""))
        if user is None:
            return _login_page(asked, "Wrong user name or password.")
        session = secrets.token_urlsafe(24)
        launch = await self.authority.records.get("launch", asked["launch"]) if asked.get("launch") else None
        if asked.get("launch") and launch is None:
            return _redirect(asked, {"error": "invalid_request", "error_description": "Unknown launch"})
        patient = (launch or {}).get("patient") or user.get("patient")
        await self.authority.records.put("session", session, {"asked": asked, "user": user["name"],
                                                              "patient": patient,
                                                              "encounter": (launch or {}).get("encounter")},
                                         time.time() + SESSION_LIFETIME)
        pick = "launch/patient" in split(asked["scope"]) and patient is None
        return _consent_page(session, client, asked, user, pick)

    async def _checked(self, form: dict[str, str]) -> tuple[dict[str, str], dict[str, Any]]:
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

    async def _decide(self, form: dict[str, str]) -> Response:
        session = await self.authority.records.take("session", form["session"])
        if session is None:
            return _page("Error", "<p>This page has expired; start again from the app.</p>", 400)
        asked = session["asked"]
        if form.get("decision") != "approve":
            return _redirect(asked, {"error": "access_denied", "error_description": "The user denied access"})
        patient = session["patient"] or form.get("patient", "").removeprefix("Patient/").strip() or None
        if "launch/patient" in split(asked["scope"]) and patient is None:
            return _redirect(asked, {"error": "invalid_request", "error_description": "No patient was chosen"})
        code = secrets.token_urlsafe(32)
        await self.authority.records.put("code", code, {**session, "patient": patient, "asked": asked},
                                         time.time() + CODE_LIFETIME)
        return _redirect(asked, {"code": code})

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


def _redirect(asked: dict[str, str], params: dict[str, str]) -> Response:
    if asked.get("state"):
        params = {**params, "state": asked["state"]}
    separator = "&" if "?" in asked["redirect_uri"] else "?"
    return RedirectResponse(f"{asked['redirect_uri']}{separator}{urlencode(params)}", 302,
                            headers={"Cache-Control": "no-store"})


def _hidden(asked: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
                   for name, value in asked.items())


def _login_page(asked: dict[str, str], problem: str = "") -> Response:
    warning = f'<p class="problem">{html.escape(problem)}</p>' if problem else ""
    body = (f'{warning}<form method="post" action="authorize">{_hidden(asked)}'
            '<label>User name <input name="username" autocomplete="username" required></label>'
            '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
            '</label><button type="submit">Sign in</button></form>')
    return _page("Sign in to Hearth", body, 401 if problem else 200)


def _consent_page(session: str, client: dict[str, Any], asked: dict[str, str], user: dict[str, Any],
                  pick: bool) -> Response:
    scopes = "".join(f"<li><code>{html.escape(scope)}</code></li>" for scope in split(asked["scope"]))
    picker = ('<label>Patient (Patient id) <input name="patient" required></label>' if pick else "")
    body = (f'<p>{html.escape(client["client_id"])} asks, for {html.escape(user["name"])}:</p><ul>{scopes}</ul>'
            f'<form method="post" action="authorize"><input type="hidden" name="session" '
            f'value="{html.escape(session)}">{picker}<button name="decision" value="approve">Allow</button>'
            '<button name="decision" value="deny" formnovalidate>Deny</button></form>')
    return _page("Allow access?", body)


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
                '<meta name="viewport" content="width=device-width"><style>body{font-family:sans-serif;'
                'max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}.problem{color:#a00}</style>'
                f'</head><body><h1>{html.escape(title)}</h1>{body}</body></html>')
    return HTMLResponse(document, status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                  "Content-Security-Policy": "default-src 'none'; "
                                                  "style-src 'unsafe-inline'; form-action 'self'"})
