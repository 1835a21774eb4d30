"""The security service: registered clients and users, access tokens issued and checked, in the database's
security records (storage/*/records.py). The HTTP side of the authorization server is server/oauth.py.

Kinds of security record, each a JSON document under a name: `client` (registered applications), `user` (people
who log in, with their role), `key` (the signing keys, the newest first), `code` (authorization codes, once),
`refresh` (refresh tokens), `jti` (client assertion ids seen, so a replay is refused) and `revoked` (revoked token
ids).

An access token Hearth issues is a JWT signed with the database's current key (security/keys.py): `iss` and `aud`
the base URL, `sub` the user (or the client), `client_id`, `scope`, the launch context (`patient`, `fhirUser`),
`roles`, `jti`, `iat`, `exp`. Checking one costs a signature check, then nothing until it expires (checked
tokens are kept); a revoked token stops working within `_REVOKED_REFRESH` seconds in every process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from hearth.security.grant import ROLES, Grant
from hearth.security.issuers import ExternalTokens, IssuerError
from hearth.security.keys import ALGORITHM, SigningKeys
from hearth.security.masks import check_mask
from hearth.security.scopes import narrowed, split
from hearth.storage.base import Records

LEEWAY = 60  # seconds of clock skew allowed on exp, nbf and iat
_REVOKED_REFRESH = 5.0
_CHECKED_MAX = 10_000

# what each role may be granted at most (a user/ token is the intersection of what was asked and this)
ROLE_CEILINGS = {
    "admin": "user/*.cruds patient/*.cruds launch launch/patient openid fhirUser offline_access online_access",
    "clinician": "user/*.cruds patient/*.cruds launch launch/patient openid fhirUser offline_access online_access",
    "integration": "user/*.cruds system/*.cruds",
    "auditor": "user/AuditEvent.rs openid fhirUser",
    "patient": "patient/*.cruds openid fhirUser offline_access online_access launch/patient",
}


class AuthError(Exception):
    """An OAuth error: `error` is the RFC 6749 code (invalid_client, invalid_grant, invalid_scope, …)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    claims: dict[str, Any]

    @property
    def expires_in(self) -> int:
        return int(self.claims["exp"] - self.claims["iat"])


class Authority:
    def __init__(self, records: Records, base_url: str, external: ExternalTokens | None = None) -> None:
        self.records = records
        self.base_url = base_url
        self.external = external  # other issuers' tokens (security/issuers.py)
        self.keys = SigningKeys(records)
        self._checked: dict[str, tuple[Grant, float, dict[str, Any]]] = {}  # token -> (grant, until, claims)
        self._clients: dict[str, tuple[dict[str, Any] | None, float]] = {}  # client_id -> (record, read at)
        self._revoked: set[str] = set()
        self._revoked_read = 0.0

    async def open(self) -> None:
        await self.records.open()
        await self.keys.load()

    # -- clients -----------------------------------------------------------------------------------------

    async def add_client(self, name: str, scope: str, *, jwks: dict[str, Any] | None = None,
                         jwks_url: str | None = None, secret: bool = False, mask: tuple[str, ...] = (),
                         redirect_uris: tuple[str, ...] = (), public: bool = False) -> dict[str, Any]:
        """Register a client; the answer holds `client_secret` (only this once) for a confidential client."""
        check_mask(mask)
        if await self.records.get("client", name) is not None:
            raise AuthError("invalid_request", f"A client named {name!r} exists")
        client: dict[str, Any] = {"client_id": name, "scope": " ".join(split(scope)), "mask": list(mask),
                                  "redirect_uris": list(redirect_uris), "created": time.time()}
        shown = dict(client)
        if jwks is not None:
            client["jwks"] = shown["jwks"] = jwks
        if jwks_url is not None:
            client["jwks_url"] = shown["jwks_url"] = jwks_url
        if secret:
            value = secrets.token_urlsafe(32)
            client["secret_sha256"] = _digest(value)
            shown["client_secret"] = value
        client["auth"] = shown["auth"] = ("private_key_jwt" if jwks is not None or jwks_url else
                                          "client_secret_basic" if secret else "none")
        if client["auth"] == "none" and not public:
            raise AuthError("invalid_request", "A client needs --jwks, --jwks-url or --secret (or --public for a "
                                               "browser app using PKCE)")
        await self.records.put("client", name, client)
        self._clients.pop(name, None)
        return shown

    async def client(self, client_id: str) -> dict[str, Any] | None:
        """The client's record (kept for 30 s: a removed client stops working within that time)."""
        cached = self._clients.get(client_id)
        if cached is not None and time.monotonic() - cached[1] < 30:
            return cached[0]
        record = await self.records.get("client", client_id)
        self._clients[client_id] = (record, time.monotonic())
        return record

    async def remove_client(self, client_id: str) -> bool:
        self._clients.pop(client_id, None)
        return await self.records.delete("client", client_id)

    def check_secret(self, client: dict[str, Any], secret: str) -> bool:
        expected = client.get("secret_sha256")
        return expected is not None and hmac.compare_digest(expected, _digest(secret))

    # -- users -------------------------------------------------------------------------------------------

    async def add_user(self, name: str, role: str, patient: str | None = None, fhir_user: str | None = None,
                       password: str | None = None) -> dict[str, Any]:
        """Register a user with a role (a ceiling on what their tokens may hold); a `patient` user is linked to
        their Patient. The answer holds a generated password when none was given (only this once)."""
        if role not in ROLES:
            raise AuthError("invalid_request", f"Unknown role {role!r}: one of {', '.join(ROLES)}")
        if role == "patient" and not patient:
            raise AuthError("invalid_request", "A patient user needs --patient Patient/ID")
        patient_id = patient.removeprefix("Patient/") if patient else None
        chosen = password or secrets.token_urlsafe(12)
        salt = secrets.token_bytes(16)
        user = {"name": name, "role": role, "patient": patient_id,
                "fhir_user": fhir_user or (f"Patient/{patient_id}" if patient_id else None),
                "salt": salt.hex(), "password_hash": _password_hash(chosen, salt).hex(), "created": time.time()}
        await self.records.put("user", name, user)
        shown = {key: value for key, value in user.items() if key not in ("salt", "password_hash")}
        return {**shown, "password": chosen} if password is None else shown

    async def check_password(self, name: str, password: str) -> dict[str, Any] | None:
        user = await self.records.get("user", name)
        if user is None:
            _password_hash(password, b"0" * 16)  # the same work whether or not the user exists
            return None
        expected = bytes.fromhex(user["password_hash"])
        return user if hmac.compare_digest(expected, _password_hash(password, bytes.fromhex(user["salt"]))) else None

    # -- issuing -----------------------------------------------------------------------------------------

    async def issue(self, client: dict[str, Any], scope: str, *, user: dict[str, Any] | None = None,
                    patient: str | None = None, expires: int = 3600, extra: dict[str, Any] | None = None) -> Issued:
        """An access token for `client` (and `user`), with `scope` narrowed to what the client is registered for
        and the user's role allows (AuthError invalid_scope when nothing is left)."""
        granted = narrowed(scope, client["scope"])
        if user is not None:
            granted = narrowed(granted, ROLE_CEILINGS[user["role"]])
            patient = patient or user.get("patient")
        if not split(granted):
            raise AuthError("invalid_scope", f"None of the scopes asked for ({scope!r}) is granted to this client")
        await self.keys.load()
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.base_url, "aud": self.base_url, "sub": user["name"] if user else
                                  client["client_id"], "client_id": client["client_id"], "scope": granted,
                                  "iat": now, "exp": now + expires, "jti": secrets.token_urlsafe(16)}
        if user is not None:
            claims["roles"] = [user["role"]]
            if user.get("fhir_user"):
                claims["fhirUser"] = user["fhir_user"]
        if patient:
            claims["patient"] = patient.removeprefix("Patient/")
        claims.update(extra or {})
        return Issued(self.keys.sign(claims), claims)

    async def revoke(self, jti: str, expires: float) -> None:
        await self.records.put("revoked", jti, {"jti": jti}, expires)
        self._revoked.add(jti)

    # -- checking ----------------------------------------------------------------------------------------

    async def grant_for(self, token: str) -> Grant:
        """The grant an access token carries; AuthError (invalid_token, 401) when it is not valid here."""
        now = time.time()
        checked = self._checked.get(token)
        if checked is None:
            claims, own = await self._verified(token)
            grant = await (self._grant(claims) if own else self._external_grant(claims))
            checked = (grant, float(claims["exp"]) + LEEWAY, claims)
            if len(self._checked) >= _CHECKED_MAX:
                self._checked.clear()
            self._checked[token] = checked
        grant, until, _ = checked
        if now > until:
            self._checked.pop(token, None)
            raise AuthError("invalid_token", "The access token has expired", 401)
        if await self._is_revoked(grant.token_id):
            raise AuthError("invalid_token", "The access token was revoked", 401)
        return grant

    async def claims(self, token: str) -> dict[str, Any]:
        """The claims of a token `grant_for` accepted."""
        await self.grant_for(token)
        return self._checked[token][2]

    async def _verified(self, token: str) -> tuple[dict[str, Any], bool]:
        """The token's claims, and whether Hearth issued it."""
        if token.count(".") != 2:  # not a JWT: an opaque token of the site's IdP
            if self.external is None:
                raise AuthError("invalid_token", "The access token is not a JWT Hearth issued", 401)
            return await self._outside(self.external.introspected(token)), False
        try:
            issuer = str(jwt.decode(token, options={"verify_signature": False}).get("iss", ""))
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "The access token is not a JWT", 401) from None
        if issuer != self.base_url and self.external is not None and self.external.trusts(issuer):
            return await self._outside(self.external.claims(token)), False
        return await self._verify(token), True

    @staticmethod
    async def _outside(checking: Any) -> dict[str, Any]:
        try:
            return await checking
        except IssuerError as error:
            raise AuthError("invalid_token", f"The access token is not valid: {error}", 401) from None

    async def _external_grant(self, claims: dict[str, Any]) -> Grant:
        """The grant of another issuer's token: its scopes (`scope`, or a `scp` list) and launch context; a client
        registered here under the same client_id adds its element mask."""
        client_id = str(claims.get("client_id") or claims.get("azp") or claims.get("sub") or "")
        scope = claims.get("scope") if isinstance(claims.get("scope"), str) else " ".join(claims.get("scp") or ())
        registered = await self.client(client_id) if client_id else None
        roles = claims.get("roles") if isinstance(claims.get("roles"), list) else ()
        return Grant(scope, client=client_id, user=claims.get("sub") if claims.get("sub") != client_id else None,
                     fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
                     roles=frozenset(str(role) for role in roles),
                     mask=tuple((registered or {}).get("mask", ())), token_id=str(claims.get("jti", "")))

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "The access token is not a JWT Hearth issued", 401) from None
        await self.keys.load()
        key = self.keys.public_key(str(header.get("kid")))
        if key is None:
            await self.keys.load(max_age=0)  # rotated by another process?
            key = self.keys.public_key(str(header.get("kid")))
        if key is None:
            raise AuthError("invalid_token", "The access token is signed with a key Hearth does not know", 401)
        try:
            return jwt.decode(token, key, algorithms=[ALGORITHM], audience=self.base_url, issuer=self.base_url,
                              leeway=LEEWAY, options={"require": ["exp", "iat", "aud", "iss", "jti"]})
        except jwt.PyJWTError as error:
            raise AuthError("invalid_token", f"The access token is not valid: {error}", 401) from None

    async def _grant(self, claims: dict[str, Any]) -> Grant:
        client = await self.client(str(claims.get("client_id", "")))
        if client is None:
            raise AuthError("invalid_token", "The access token's client is no longer registered", 401)
        return Grant(claims["scope"], client=client["client_id"], user=claims.get("sub") if "roles" in claims else None,
                     fhir_user=claims.get("fhirUser"), patient=claims.get("patient"),
                     roles=frozenset(claims.get("roles", ())), mask=tuple(client.get("mask", ())),
                     token_id=claims["jti"])

    async def _is_revoked(self, jti: str) -> bool:
        if time.monotonic() - self._revoked_read > _REVOKED_REFRESH:
            self._revoked = {record["jti"] for record in await self.records.list("revoked")}
            self._revoked_read = time.monotonic()
        return jti in self._revoked


def _digest(secret: str) -> str:
    """Client secrets are 256 random bits: a plain hash is enough (nothing to brute-force)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _password_hash(password: str, salt: bytes) -> bytes:
    """People choose passwords: a deliberately slow hash."""
    return hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1)


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(client_id, secret) of an `Authorization: Basic …` header."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None
