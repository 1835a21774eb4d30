"""The built-in authorization server over HTTP (SMART App Launch 2.x, Backend Services, RFC 7662/7009):
`/.well-known/smart-configuration` and `/auth/{token,introspect,revoke,jwks,authorize}`. OAuth endpoints answer
OAuth JSON (`{"error": …}`), not OperationOutcomes, as OAuth clients expect."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from hearth.security.assertions import ALGORITHMS, ASSERTION_TYPE, authenticate_assertion
from hearth.security.authority import AuthError, Authority, basic_credentials
from hearth.security.launch import Launches
from hearth.server import launch_pages
from hearth.server.forms import read_form

BACKEND_TOKEN_LIFETIME = 300  # seconds (SMART Backend Services: at most five minutes)
CAPABILITIES = ["launch-ehr", "launch-standalone", "client-public", "client-confidential-symmetric",
                "client-confidential-asymmetric", "context-ehr-patient", "context-standalone-patient",
                "context-ehr-encounter", "permission-offline", "permission-online", "permission-patient",
                "permission-user", "permission-v1", "permission-v2", "authorize-post", "sso-openid-connect"]
SCOPES = ["openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
          "patient/*.cruds", "user/*.cruds", "system/*.cruds", "patient/*.read", "user/*.read", "system/*.read"]

Endpoint = Callable[[Request], Awaitable[Response]]


class OAuthEndpoints:
    def __init__(self, authority: Authority, launches: Launches, base_url: str) -> None:
        self.authority = authority
        self.launches = launches
        self.base_url = base_url
        self.token_url = f"{base_url}/auth/token"
        self.routes: dict[tuple[str, str], Endpoint] = {
            ("GET", "/.well-known/smart-configuration"): self.smart_configuration_response,
            ("GET", "/auth/jwks"): self.jwks,
            ("POST", "/auth/token"): self.token,
            ("POST", "/auth/introspect"): self.introspect,
            ("POST", "/auth/revoke"): self.revoke,
            ("GET", "/auth/authorize"): self.authorize,
            ("POST", "/auth/authorize"): self.authorize,
        }

    def find(self, method: str, path: str) -> Endpoint | None:
        return self.routes.get(("GET" if method == "HEAD" else method, path.rstrip("/") or "/"))

    def smart_configuration(self) -> dict[str, Any]:
        base = self.base_url
        return {
            "issuer": base, "jwks_uri": f"{base}/auth/jwks",
            "authorization_endpoint": f"{base}/auth/authorize", "token_endpoint": self.token_url,
            "introspection_endpoint": f"{base}/auth/introspect", "revocation_endpoint": f"{base}/auth/revoke",
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic", "none"],
            "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
            "scopes_supported": SCOPES, "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"], "capabilities": CAPABILITIES,
        }

    async def smart_configuration_response(self, request: Request) -> Response:
        return _json(self.smart_configuration())

    async def authorize(self, request: Request) -> Response:
        return await launch_pages.authorize(self.launches, request)

    async def jwks(self, request: Request) -> Response:
        await self.authority.keys.load()
        return _json(self.authority.keys.jwks())

    async def token(self, request: Request) -> Response:
        try:
            form = await read_form(request)
            grant_type = form.get("grant_type")
            if grant_type == "client_credentials":
                client = await self.client(request, form, confidential=True)
                issued = await self.authority.issue(client, form.get("scope", ""), expires=BACKEND_TOKEN_LIFETIME)
                return _json(_token_answer(issued))
            if grant_type in ("authorization_code", "refresh_token"):
                client = await self.client(request, form, confidential=False)
                return _json(await self.launches.exchange(client, grant_type, form))
            raise AuthError("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")
        except AuthError as error:
            return _oauth_error(error)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662, for confidential clients (authenticated as at the token endpoint)."""
        try:
            form = await read_form(request)
            await self.client(request, form, confidential=True)
            token = form.get("token", "")
            try:
                grant = await self.authority.grant_for(token)
            except AuthError:
                return _json({"active": False})
            claims = await self.authority.claims(token)
            return _json({"active": True, **{key: claims[key] for key in
                                              ("scope", "client_id", "sub", "exp", "iat", "iss", "aud", "jti",
                                               "patient", "fhirUser") if key in claims},
                          "token_type": "Bearer", "username": grant.user})
        except AuthError as error:
            return _oauth_error(error)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: the token (access or refresh) stops working; unknown tokens are not an error."""
        try:
            form = await read_form(request)
            client = await self.client(request, form, confidential=False)
            await self.launches.revoke(client, form.get("token", ""))
            return Response(b"", 200, {"Cache-Control": "no-store"})
        except AuthError as error:
            return _oauth_error(error)

    async def client(self, request: Request, form: dict[str, str], confidential: bool) -> dict[str, Any]:
        """The client the request authenticates: by assertion, by HTTP Basic, or (public clients, when allowed)
        by `client_id` alone."""
        if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
            return await authenticate_assertion(self.authority, form["client_assertion"], self.token_url)
        basic = basic_credentials(request.headers.get("authorization"))
        if basic is not None:
            client = await self.authority.client(basic[0])
            if client is None or not self.authority.check_secret(client, basic[1]):
                raise AuthError("invalid_client", "Unknown client or wrong secret", 401)
            return client
        if not confidential and form.get("client_id"):
            client = await self.authority.client(form["client_id"])
            if client is not None and client.get("auth") == "none":
                return client
        raise AuthError("invalid_client", "Client authentication failed: use private_key_jwt (client_assertion) "
                                          "or HTTP Basic with the client secret", 401)


def _token_answer(issued: Any) -> dict[str, Any]:
    answer = {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in,
              "scope": issued.claims["scope"]}
    for claim in ("patient", "encounter", "fhirUser"):
        if claim in issued.claims:
            answer[claim] = issued.claims[claim]
    return answer


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status, {"Cache-Control": "no-store", "Pragma": "no-cache"},
                    media_type="application/json")


def _oauth_error(error: AuthError) -> Response:
    headers = {"Cache-Control": "no-store"}
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="hearth"'
    return Response(orjson.dumps({"error": error.error, "error_description": error.description}), error.status,
                    headers, media_type="application/json")
