"""What every interaction needs: the store, the search registry, the server's base URL and limits, the policy
consulted around each interaction, the write hooks, and the operations services add (server/wiring.py builds it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from interactions.hooks import WriteHook
from interactions.limits import Limits
from interactions.policy import OpenPolicy, Policy
from interactions.request import Caller, Outcome, Request
from storage.base import Assertion, Change, Store, Version, Write

if TYPE_CHECKING:
    from search.registry import SearchRegistry

# An operation (`$status`…) a service adds: answers one request whose `operation` names it.
Operation = Callable[["Context", Request], Awaitable[Outcome]]


@dataclass
class Context:
    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    limits: Limits = field(default_factory=Limits)
    conditional_delete_multiple: bool = False  # DELETE Type?criteria may delete several matches
    policy: Policy = field(default_factory=OpenPolicy)
    hooks: list[WriteHook] = field(default_factory=list)
    # (resource type or None for the system level, "$name") -> the operation
    operations: dict[tuple[str | None, str], Operation] = field(default_factory=dict)
    # CapabilityStatement parts services add (the subscription topics), and the statement once built
    capability_extras: dict[str, Any] = field(default_factory=dict)
    capability_statement: bytes | None = None

    @cached_property
    def registry(self) -> SearchRegistry:
        """The R4 search parameters and the ones registered in this context's database."""
        from search.registry import default_registry
        return default_registry().copy()

    def prepare(self, caller: Caller, resource_type: str, resource: dict[str, Any], previous: int) -> dict[str, Any]:
        """`resource` as the write hooks want it stored (interactions/hooks.py)."""
        for hook in self.hooks:
            if hook.concerns(resource_type):
                resource = hook.prepare(self, caller, resource_type, resource, previous)
        return resource

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = ()) -> list[Change]:
        """Commit through the store, with the write hooks' checks before and their follow-up after. Every write
        path goes through here."""
        concerned = [hook for hook in self.hooks if any(hook.concerns(write.type) for write in writes)]
        for hook in concerned:
            await hook.check(self, writes)
        changes = await self.store.commit(writes, assertions)
        for hook in concerned:
            await hook.committed(self, writes, changes)
        return changes


def released(ctx: Context, request: Request, versions: Sequence[Version]) -> list[Version]:
    """The versions `request`'s caller may see, as the policy shows them (what leaves in a Bundle)."""
    shown = (ctx.policy.after(request, version) for version in versions)
    return [version for version in shown if version is not None]
