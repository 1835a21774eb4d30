"""JSON Web Key Sets published by others (a client's keys, an IdP's): read over HTTP, and the key a token names.

The URLs come from the operator (client registrations, HEARTH_AUTH_ISSUERS), so private addresses are allowed."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jwt

_TIMEOUT = aiohttp.ClientTimeout(total=5)
_MAX_BYTES = 1_000_000


class JwksError(Exception):
    """The document could not be read: the reason."""


async def fetch_json(url: str) -> dict[str, Any]:
    """The JSON object at `url` (a JWKS, an OpenID or SMART configuration): 5 s at most, no redirects."""
    try:
        async with aiohttp.ClientSession(timeout=_TIMEOUT) as session:
            async with session.get(url, allow_redirects=False) as response:
                if response.status != 200:
                    raise JwksError(f"{url} answered {response.status}")
                found = json.loads(await response.content.read(_MAX_BYTES))
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        raise JwksError(f"{url}: {error}") from None
    if not isinstance(found, dict):
        raise JwksError(f"{url} did not answer a JSON object")
    return found


def find_key(jwks: dict[str, Any], kid: str | None, alg: str) -> Any | None:
    """The public key of `jwks` with this kid (any, when the token names none) usable with `alg`, or None."""
    for jwk in jwks.get("keys", []):
        if (kid is None or jwk.get("kid") == kid) and jwk.get("alg") in (None, alg):
            try:
                return jwt.PyJWK(jwk, alg).key
            except jwt.PyJWTError:
                continue
    return None
