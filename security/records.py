"""The built-in authorization server's records, in the same database as the data (storage/*/security_records.py).

Kinds of record, each a JSON document under a name: `client` (registered applications), `user` (people who log
in, with their role), `key` (the signing keys, the newest first), `code` (authorization codes, once), `refresh`
(refresh tokens), `jti` (client assertion ids seen, so a replay is refused) and `revoked` (revoked token ids).
"""

from __future__ import annotations

from typing import Any, Protocol


class SecurityRecords(Protocol):
    async def open(self) -> None: ...

    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    async def put(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> None:
        """Store (or replace) a record; `expires` (epoch seconds) lets it be purged after."""

    async def add(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> bool:
        """Store a record only if none lives under that name (False: one did): single use, across processes."""

    async def take(self, kind: str, name: str) -> dict[str, Any] | None:
        """Remove a record and return it (None if absent): at most one caller gets it."""

    async def delete(self, kind: str, name: str) -> bool: ...

    async def list(self, kind: str) -> list[dict[str, Any]]: ...

