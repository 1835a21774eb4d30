"""The hooks the dispatcher consults around every interaction: what a caller may do, and what it may see.

`before` may refuse a request (raise FhirError: 401/403, or 404 where revealing existence would leak).
`restrict` narrows what a search may match (so that totals and pages agree with what the caller may see).
`after` filters (None: the caller may not see it) or masks each resource version on its way out: a read's
resource, search matches and `_include`/`_revinclude` entries, history entries, Bundle entries, notification
payloads. The policy Hearth runs with today lets everything through; SMART authorization is built on these hooks.
"""

from __future__ import annotations

from typing import Protocol

from hearth.interactions.request import Request
from hearth.search.ir import Query
from hearth.storage.base import Version


class Policy(Protocol):
    def before(self, request: Request) -> None: ...

    def restrict(self, request: Request, query: Query) -> Query: ...

    def after(self, request: Request, version: Version) -> Version | None: ...


class OpenPolicy:
    """Every caller may do and see everything."""

    def before(self, request: Request) -> None:
        return None

    def restrict(self, request: Request, query: Query) -> Query:
        return query

    def after(self, request: Request, version: Version) -> Version | None:
        return version
