"""Tokens from other authorization servers (a site's IdP): JWTs of configured issuers, checked against their
published keys, and opaque tokens through the IdP's RFC 7662 introspection endpoint.

`HEARTH_AUTH_ISSUERS` lists the trusted issuers, comma-separated: `https://idp.example.org` (its JWKS found through
`/.well-known/openid-configuration`, else `/.well-known/smart-configuration`) or
`https://idp.example.org=https://idp.example.org/keys` (the JWKS URL given). Their URLs come from the operator, so
private addresses are allowed. A token's audience must be Hearth's base URL; `exp` and `nbf` are checked with 60 s
of clock skew; RS256, RS384, ES256 and ES384 are accepted.

`HEARTH_AUTH_INTROSPECTION` (an URL) with `HEARTH_AUTH_INTROSPECTION_CLIENT` (`client_id:secret`, sent as HTTP
Basic) lets opaque tokens in: an active answer's `scope`, `client_id`, `sub`, `patient`, `fhirUser` and `exp` make
the grant; it is kept at most 60 s (or until `exp`), so a revocation at the IdP takes effect within a minute.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt

from hearth.security.jwks import JwksError, fetch_json, find_key

ALGORITHMS = ["RS256", "RS384", "ES256", "ES384"]
_KEYS_TTL = 300.0
_INTROSPECTION_TTL = 60.0
_REREADS_A_MINUTE = 6
_TIMEOUT = aiohttp.ClientTimeout(total=5)


class IssuerError(Exception):
    """The token is not valid: the reason."""


@dataclass(frozen=True, slots=True)
class Issuer:
    url: str
    jwks_url: str | None = None  # None: discovered


def parse_issuers(setting: str) -> list[Issuer]:
    issuers = []
    for item in filter(None, (part.strip() for part in setting.split(","))):
        url, _, jwks = item.partition("=")
        if not url.startswith(("https://", "http://")) or (jwks and not jwks.startswith(("https://", "http://"))):
            raise ValueError(f"HEARTH_AUTH_ISSUERS: {item!r} is not ISSUER_URL or ISSUER_URL=JWKS_URL")
        issuers.append(Issuer(url.rstrip("/"), jwks or None))
    return issuers


class ExternalTokens:
    def __init__(self, issuers: list[Issuer], audience: str, introspection: str = "",
                 introspection_client: str = "") -> None:
        self.issuers = {issuer.url: issuer for issuer in issuers}
        self.audience = audience
        self.introspection = introspection
        basic = base64.b64encode(introspection_client.encode()).decode()
        self.introspection_headers = {"Authorization": f"Basic {basic}"} if ":" in introspection_client else {}
        self._keys: dict[str, tuple[dict[str, Any], float]] = {}  # jwks URL -> (JWKS, read at)
        self._rereads: list[float] = []  # when keys were re-read for a kid not known: a bounded number a minute

    def trusts(self, issuer: str) -> bool:
        return issuer.rstrip("/") in self.issuers

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of a JWT from a trusted issuer (IssuerError otherwise)."""
        try:
            issuer_url = str(jwt.decode(token, options={"verify_signature": False}).get("iss", ""))
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise IssuerError("not a JWT") from None
        issuer = self.issuers.get(issuer_url.rstrip("/"))
        if issuer is None:
            raise IssuerError(f"issuer {issuer_url!r} is not trusted here")
        if header.get("alg") not in ALGORITHMS:
            raise IssuerError(f"algorithm {header.get('alg')!r} is not accepted")
        key = await self._key(issuer, header.get("kid"), header["alg"])
        try:
            return jwt.decode(token, key, algorithms=[header["alg"]], audience=self.audience, issuer=issuer_url,
                              leeway=60, options={"require": ["exp", "iss", "aud"]})
        except jwt.PyJWTError as error:
            raise IssuerError(str(error)) from None

    async def introspected(self, token: str) -> dict[str, Any]:
        """The claims of an opaque token the IdP says is active (IssuerError otherwise)."""
        if not self.introspection:
            raise IssuerError("opaque tokens are not accepted (no HEARTH_AUTH_INTROSPECTION)")
        try:
            async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
                async with session.post(self.introspection, data={"token": token},
                                        headers=self.introspection_headers, allow_redirects=False) as response:
                    if response.status != 200:
                        raise IssuerError(f"introspection answered {response.status}")
                    answer = json.loads(await response.content.read(100_000))
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            raise IssuerError(f"introspection failed: {error}") from None
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise IssuerError("the token is not active")
        if "aud" in answer and self.audience not in (answer["aud"] if isinstance(answer["aud"], list)
                                                     else [answer["aud"]]):
            raise IssuerError("the token is for another audience")
        now = time.time()
        answer["exp"] = min(float(answer.get("exp", now + _INTROSPECTION_TTL)), now + _INTROSPECTION_TTL)
        return answer

    async def _key(self, issuer: Issuer, kid: str | None, alg: str) -> Any:
        jwks_url = issuer.jwks_url or await self._discover(issuer.url)
        for fresh in (False, True):  # a key the cache does not know: the issuer may have rotated
            key = find_key(await self._jwks(jwks_url, fresh), kid, alg)
            if key is not None:
                return key
        raise IssuerError(f"no key of the issuer matches kid {kid!r}")

    async def _discover(self, issuer: str) -> str:
        for path in ("/.well-known/openid-configuration", "/.well-known/smart-configuration"):
            try:
                configuration = await fetch_json(issuer + path)
            except JwksError:
                continue
            if isinstance(configuration.get("jwks_uri"), str):
                return configuration["jwks_uri"]
        raise IssuerError(f"the issuer {issuer} publishes no jwks_uri")

    async def _jwks(self, url: str, fresh: bool) -> dict[str, Any]:
        cached = self._keys.get(url)
        if cached is not None and not fresh and time.monotonic() - cached[1] < _KEYS_TTL:
            return cached[0]
        if cached is not None and fresh:  # tokens with made-up kids must not make Hearth hammer the IdP
            now = time.monotonic()
            self._rereads = [moment for moment in self._rereads if now - moment < 60]
            if len(self._rereads) >= _REREADS_A_MINUTE:
                return cached[0]
            self._rereads.append(now)
        try:
            jwks = await fetch_json(url)
        except JwksError as error:
            raise IssuerError(str(error)) from None
        self._keys[url] = (jwks, time.monotonic())
        return jwks

