"""What every interaction needs: the store, the search registry, the server's base URL and limits, the policy
consulted around each interaction, the write hooks, and the operations services add (server/wiring.py builds it).

Write hooks are what belongs to every write of some resource types, whichever way it comes (REST, a Bundle
entry, a PATCH, `hearth import`, a connector): definition resources (interactions/definitions.py) and Subscriptions
(subscriptions/acceptance.py) are kept right this way; a check made on one path only is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from hearth.interactions.audit import AuditTrail, NoAudit, noted
from hearth.interactions.limits import Limits
from hearth.interactions.policy import OpenPolicy, Policy
from hearth.interactions.refusals import answered
from hearth.interactions.request import SYSTEM, Caller, Outcome, Request
from hearth.storage.base import Assertion, Change, Store, Version, Write

if TYPE_CHECKING:
    from hearth.search.registry import SearchRegistry

# An operation (`$status`…) a service adds: answers one request whose `operation` names it.
Operation = Callable[["Context", Request], Awaitable[Outcome]]


def at_versions(handler: Operation) -> Operation:
    """Mark an operation as served on a resource's versions too (`Type/id/_history/vid/$op`); others answer 400
    there."""
    handler.at_versions = True  # type: ignore[attr-defined]
    return handler


def runs_at_versions(handler: Operation) -> bool:
    return getattr(handler, "at_versions", False)


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

    async def observed(self, ctx: Context, changes: Sequence[Change]) -> None:
        """Changes read from the change log (interactions/follower.py), by any process, this one's included: bring
        what this process holds in memory in line with them. Called in order; never all of a commit at once."""


@dataclass
class Context:
    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    limits: Limits = field(default_factory=Limits)
    conditional_delete_multiple: bool = False  # DELETE Type?criteria may delete several matches
    policy: Policy = field(default_factory=OpenPolicy)
    audit: AuditTrail = field(default_factory=NoAudit)
    hooks: list[WriteHook] = field(default_factory=list)
    # (resource type or None for the system level, "$name") -> the operation
    operations: dict[tuple[str | None, str], Operation] = field(default_factory=dict)
    # CapabilityStatement parts services add (the subscription topics), and the statement once built
    capability_extras: dict[str, Any] = field(default_factory=dict)
    capability_statement: bytes | None = None
    # the change log's end before the stored definitions were loaded: where a follower (interactions/follower.py)
    # starts, so that nothing written meanwhile is missed
    loaded_seq: int = 0

    @cached_property
    def registry(self) -> SearchRegistry:
        """The R4 search parameters and the ones registered in this context's database."""
        from hearth.search.registry import default_registry
        return default_registry().copy()

    def prepare(self, caller: Caller, resource_type: str, resource: dict[str, Any], previous: int) -> dict[str, Any]:
        """`resource` as the write hooks want it stored (interactions/context.py)."""
        for hook in self.hooks:
            if hook.concerns(resource_type):
                resource = hook.prepare(self, caller, resource_type, resource, previous)
        return resource

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = (),
                     caller: Caller = SYSTEM) -> list[Change]:
        """Commit through the store, as `caller` writes: admitted by the policy, with the write hooks' checks before
        and their follow-up after. Every write path goes through here."""
        await self.policy.admit(caller, writes)
        concerned = [hook for hook in self.hooks if any(hook.concerns(write.type) for write in writes)]
        for hook in concerned:
            await hook.check(self, writes)
        with answered():  # an assertion's search past its deadline
            changes = await self.store.commit(writes, assertions, self.audit.for_writes(caller, writes))
        interaction = noted()
        if interaction is not None:
            interaction.committed = True
        for hook in concerned:
            await hook.committed(self, writes, changes)
        return changes


def released(ctx: Context, request: Request, versions: Sequence[Version]) -> list[Version]:
    """The versions `request`'s caller may see, as the policy shows them (what leaves in a Bundle)."""
    shown = (ctx.policy.after(request, version) for version in versions)
    released = [version for version in shown if version is not None]
    interaction = noted()
    if interaction is not None:
        interaction.shown.extend(released)
    return released
