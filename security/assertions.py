"""Client authentication by signed assertion (`private_key_jwt`, SMART Backend Services): the client signs a short
JWT with its own key, registered as a JWKS (inline, or at a URL the operator gave)."""

from __future__ import annotations

import time
from typing import Any

import jwt

from hearth.security.authority import LEEWAY, AuthError, Authority
from hearth.security.jwks import JwksError, fetch_json, find_key

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384", "RS256", "ES256"]
MAX_LIFETIME = 300  # seconds an assertion may be valid for (SMART: at most five minutes)
_JWKS_TTL = 300.0
_jwks_cache: dict[str, tuple[dict[str, Any], float]] = {}


async def authenticate_assertion(authority: Authority, assertion: str, audience: str) -> dict[str, Any]:
    """The client a valid, unreplayed assertion authenticates (AuthError invalid_client otherwise)."""
    try:
        unverified = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise AuthError("invalid_client", "client_assertion is not a JWT", 401) from None
    client_id = str(unverified.get("iss", ""))
    client = await authority.client(client_id)
    if client is None or client.get("auth") != "private_key_jwt" or unverified.get("sub") != client_id:
        raise AuthError("invalid_client", "Unknown client, or one not registered for private_key_jwt", 401)
    if header.get("alg") not in ALGORITHMS:
        raise AuthError("invalid_client", f"Assertion algorithm must be one of {', '.join(ALGORITHMS)}", 401)
    key = await _key(client, header.get("kid"), header["alg"])
    try:
        claims = jwt.decode(assertion, key, algorithms=[header["alg"]], audience=audience, issuer=client_id,
                            leeway=LEEWAY, options={"require": ["exp", "jti", "iss", "sub", "aud"]})
    except jwt.PyJWTError as error:
        raise AuthError("invalid_client", f"client_assertion is not valid: {error}", 401) from None
    if claims["exp"] > time.time() + MAX_LIFETIME + LEEWAY:
        raise AuthError("invalid_client", f"client_assertion must expire within {MAX_LIFETIME} s", 401)
    if not await authority.records.add("jti", f"{client_id}|{claims['jti']}", {"jti": claims["jti"]},
                                       float(claims["exp"]) + LEEWAY):
        raise AuthError("invalid_client", "client_assertion was used before (jti replay)", 401)
    return client


async def _key(client: dict[str, Any], kid: str | None, alg: str) -> Any:
    key = find_key(await _jwks(client), kid, alg)
    if key is None:
        raise AuthError("invalid_client", f"No key in the client's JWKS matches kid {kid!r} and {alg}", 401)
    return key


async def _jwks(client: dict[str, Any]) -> dict[str, Any]:
    if "jwks" in client:
        return client["jwks"]
    url = client["jwks_url"]
    cached = _jwks_cache.get(url)
    if cached is not None and time.monotonic() - cached[1] < _JWKS_TTL:
        return cached[0]
    try:
        jwks = await fetch_json(url)
    except JwksError as error:
        raise AuthError("invalid_client", f"The client's JWKS could not be read: {error}", 401) from None
    _jwks_cache[url] = (jwks, time.monotonic())
    return jwks
