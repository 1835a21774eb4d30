"""Write hooks: what belongs to every write of some resource types, whichever way it comes (REST, a Bundle
entry, a PATCH, `hearth import`, a connector). Definition resources (interactions/definitions.py) and
Subscriptions (subscriptions/service.py) are kept right this way; a hook that checks only one path is a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from interactions.request import Caller
from storage.base import Change, Write

if TYPE_CHECKING:
    from interactions.context import Context


class WriteHook:
    """Override what you need. `types`: the resource types the hook is about (None: every write)."""

    types: frozenset[str] | None = None

    def concerns(self, resource_type: str) -> bool:
        return self.types is None or resource_type in self.types

    def prepare(self, ctx: Context, caller: Caller, resource_type: str, resource: dict[str, Any],
                previous: int) -> dict[str, Any]:
        """The resource as it will be stored, when a version of it is built (may refuse with a FhirError).
        `previous` is the version it replaces (0: none). It runs where the version is built, possibly on a worker
        thread: keep it synchronous and quick."""
        return resource

    async def check(self, ctx: Context, writes: Sequence[Write]) -> None:
        """Before `writes` (at least one of this hook's types) are committed; may refuse with a FhirError."""

    async def committed(self, ctx: Context, writes: Sequence[Write], changes: Sequence[Change]) -> None:
        """After `writes` are committed (called for every commit a hook concerns)."""
