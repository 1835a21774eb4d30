"""The hooks the dispatcher consults around every interaction: what a caller may do, and what it may see.

`before` may refuse a request (raise FhirError: 401/403, or 404 where revealing existence would leak).
`restrict` narrows what a search may match for a caller (so that totals and pages agree with what it may see): a
search's, and a conditional interaction's condition.
`after` filters (None: the caller may not see it) or masks each resource version on its way out: a read's
resource, search matches and `_include`/`_revinclude` entries, history entries, Bundle entries, notification
payloads. `sees_all`: whether nothing the request covers is hidden (history reports its total only then).
`admit` may refuse writes a caller is about to commit, on every write path (interactions/context.py `commit`).
`OpenPolicy` lets everything through; SMART authorization (security/policy.py) is built on these hooks.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from hearth.interactions.request import Caller, Request
from hearth.search.ir import Query
from hearth.storage.base import Version, Write


class Policy(Protocol):
    def before(self, request: Request) -> None: ...

    def restrict(self, caller: Caller, query: Query) -> Query: ...

    def after(self, request: Request, version: Version) -> Version | None: ...

    def sees_all(self, request: Request) -> bool: ...

    async def admit(self, caller: Caller, writes: Sequence[Write]) -> None: ...


class OpenPolicy:
    """Every caller may do and see everything."""

    def before(self, request: Request) -> None:
        return None

    def restrict(self, caller: Caller, query: Query) -> Query:
        return query

    def after(self, request: Request, version: Version) -> Version | None:
        return version

    def sees_all(self, request: Request) -> bool:
        return True

    async def admit(self, caller: Caller, writes: Sequence[Write]) -> None:
        return None
