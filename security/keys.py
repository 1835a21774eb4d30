"""The built-in authorization server's signing keys: RS384 key pairs kept per database, the newest signing,
every kept one published in the JWKS (so tokens signed before a rotation stay valid until they expire)."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hearth.storage.base import Records

ALGORITHM = "RS384"


class SigningKeys:
    def __init__(self, records: Records) -> None:
        self.records = records
        self._keys: list[dict[str, Any]] = []  # newest first
        self._private: list[Any] = []  # their key objects, parsed once
        self._loaded = 0.0

    async def load(self, max_age: float = 30.0) -> None:
        """Read the keys (again, when older than `max_age` s: another process may have rotated); make the first
        one if there is none."""
        if self._keys and time.monotonic() - self._loaded < max_age:
            return
        keys = sorted(await self.records.list("key"), key=lambda key: key["created"], reverse=True)
        if not keys:
            await self.rotate()
            return
        self._private = [serialization.load_pem_private_key(key["private_pem"].encode(), None) for key in keys]
        self._keys, self._loaded = keys, time.monotonic()

    async def rotate(self) -> str:
        """Make a new key pair and sign with it from now on; returns its key id."""
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        kid = secrets.token_urlsafe(12)
        await self.records.put("key", kid, {"kid": kid, "alg": ALGORITHM, "private_pem": pem, "created": time.time()})
        self._keys, self._loaded = [], 0.0
        await self.load()
        return kid

    async def remove(self, kid: str) -> bool:
        removed = await self.records.delete("key", kid)
        self._keys, self._loaded = [], 0.0
        return removed

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._private[0], algorithm=ALGORITHM, headers={"kid": self._keys[0]["kid"]})

    def public_key(self, kid: str) -> Any | None:
        for key, private in zip(self._keys, self._private):
            if key["kid"] == kid:
                return private.public_key()
        return None

    def jwks(self) -> dict[str, Any]:
        """The public keys as a JSON Web Key Set."""
        published = []
        for key, private in zip(self._keys, self._private):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
            published.append({**jwk, "kid": key["kid"], "alg": ALGORITHM, "use": "sig"})
        return {"keys": published}
