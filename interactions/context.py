"""What every interaction needs: the store, the search registry, the server's base URL and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Callable, Sequence

from interactions import definitions
from interactions.limits import Limits
from storage.base import Assertion, Change, Store, Write

if TYPE_CHECKING:
    from search.registry import SearchRegistry


@dataclass
class Context:
    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    extras: dict = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    # run on every commit before it is made; each may refuse the writes with a FhirError (subscriptions add theirs)
    write_checks: list[Callable[[Context, Sequence[Write]], None]] = field(
        default_factory=lambda: [definitions.check])
    # told of every commit once it is made (the subscription dispatcher wakes on them instead of polling)
    commit_listeners: list[Callable[[Sequence[Change]], None]] = field(default_factory=list)

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = ()) -> list[Change]:
        """Commit through the store; definitional resources (SearchParameter, ValueSet, CodeSystem) are checked
        before and take effect after (interactions/definitions.py). Every write path goes through here."""
        from interactions.search import answered  # (it imports this module)
        for check in self.write_checks:
            check(self, writes)
        with answered():  # an assertion's search past its deadline
            changes = await self.store.commit(writes, assertions)
        await definitions.apply(self, writes)
        for listener in self.commit_listeners:
            listener(changes)
        return changes

    @cached_property
    def registry(self) -> "SearchRegistry":
        from search.registry import default_registry
        return default_registry()
