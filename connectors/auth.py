"""How a connector authenticates to its upstream: no token, a fixed bearer token, or an access token from the
upstream's token endpoint (found in its `.well-known/smart-configuration`) by SMART Backend Services:
`client_credentials` with `client_secret_basic` (client-secret) or a signed `private_key_jwt` assertion
(backend-services, RS384/ES384). Tokens are kept until shortly before they expire; `renew` after a 401."""

from __future__ import annotations

import base64
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt

from hearth.connectors.config import AuthConfig

_EARLY = 30.0  # seconds before expiry a token is renewed
_ASSERTION_LIFETIME = 240  # seconds (Backend Services allows at most 300)


class AuthError(Exception):
    """The upstream's token endpoint refused the connector's credentials (or cannot be found)."""


class KeyProblem(AuthError):
    """The connector's own key cannot sign (missing, unreadable, wrong kind): Hearth's side, not the upstream's."""


class Authenticator:
    def __init__(self, config: AuthConfig, base: str, timeout: float = 30.0) -> None:
        self.config = config
        self.base = base
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = config.token or None
        self._expires = float("inf")
        self._endpoint: str | None = None
        self._key: Any = None

    @property
    def renewable(self) -> bool:
        return self.config.kind in ("client-secret", "backend-services")

    async def headers(self, session: aiohttp.ClientSession) -> dict[str, str]:
        if self.config.kind == "none":
            return {}
        if self.renewable and (self._token is None or time.time() >= self._expires - _EARLY):
            await self._fetch(session)
        return {"Authorization": f"Bearer {self._token}"}

    def renew(self) -> None:
        """Forget the token (the upstream answered 401): the next request gets a new one."""
        if self.renewable:
            self._token = None

    async def _fetch(self, session: aiohttp.ClientSession) -> None:
        endpoint = await self._token_endpoint(session)
        form = {"grant_type": "client_credentials", "scope": self.config.scope}
        headers = {"Accept": "application/json"}
        if self.config.kind == "client-secret":
            headers["Authorization"] = _basic(self.config.client_id, self.config.secret)
        else:
            form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            form["client_assertion"] = self._assertion(endpoint)
        async with session.post(endpoint, data=form, timeout=self.timeout, headers=headers) as response:
            body = await _json(response)
            if response.status != 200 or not isinstance(body, dict) or "access_token" not in body:
                raise AuthError(f"token endpoint {endpoint} answered {response.status}: "
                                f"{body.get('error', '') if isinstance(body, dict) else ''}")
        self._token = str(body["access_token"])
        lifetime = body.get("expires_in", 300)
        self._expires = time.time() + (float(lifetime) if isinstance(lifetime, (int, float)) else 300.0)

    async def _token_endpoint(self, session: aiohttp.ClientSession) -> str:
        if self._endpoint is None:
            url = f"{self.base}/.well-known/smart-configuration"
            async with session.get(url, timeout=self.timeout, headers={"Accept": "application/json"}) as response:
                document = await _json(response) if response.status == 200 else None
            if not isinstance(document, dict) or not isinstance(document.get("token_endpoint"), str):
                raise AuthError(f"no token_endpoint in {url}")
            self._endpoint = document["token_endpoint"]
        return self._endpoint

    def _assertion(self, endpoint: str) -> str:
        try:
            if self._key is None:
                self._key = Path(self.config.key_file).read_bytes()
            now = int(time.time())
            claims = {"iss": self.config.client_id, "sub": self.config.client_id, "aud": endpoint,
                      "exp": now + _ASSERTION_LIFETIME, "iat": now, "jti": str(uuid.uuid4())}
            headers = {"kid": self.config.key_id} if self.config.key_id else None
            return jwt.encode(claims, self._key, algorithm=self.config.alg, headers=headers)
        except (OSError, ValueError, TypeError, jwt.PyJWTError) as error:
            self._key = None
            raise KeyProblem(f"cannot sign a client assertion with {self.config.key_file}: {error}") from None


async def _json(response: aiohttp.ClientResponse) -> Any:
    """The answer's JSON; None when it is not JSON (said as an AuthError by the caller)."""
    try:
        return await response.json(content_type=None)
    except ValueError:
        return None


def _basic(client_id: str, secret: str) -> str:
    """client_secret_basic: both parts form-encoded, then base64 (RFC 6749 section 2.3.1)."""
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()
