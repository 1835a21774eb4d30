"""What the dispatcher takes and gives: a typed request (who asks, for which interaction, on what) and its outcome.

A request comes from anywhere: REST, one entry of a batch or transaction, `hearth import`, a Subscription's own
reads, a connector. Only the headers that change an interaction's meaning are carried, already parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlencode

from hearth.storage.base import Version

CallerKind = Literal["anonymous", "client", "connector", "subscription", "system"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who asks. `client`: an application with an access token (`id` its client_id); `system`: Hearth itself (its
    own status writes, reindexing, `hearth import`); `subscription`: the reads that build one Subscription's
    notifications (`id` the Subscription's); `connector`: an inbound connector (`id` its name).

    `grant` is what the caller was granted (security/grant.py: scopes, launch context, roles, element mask), which
    the policy holds it to; None: a caller the policy does not restrict (Hearth itself, or anonymous callers where
    authorization is not required).
    """

    kind: CallerKind
    id: str = ""
    grant: Any = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.kind} {self.id}".strip()


ANONYMOUS = Caller("anonymous")
SYSTEM = Caller("system")

Interaction = Literal[
    "read", "vread", "create", "update", "patch", "delete",
    "conditional-create", "conditional-update", "conditional-patch", "conditional-delete",
    "history-instance", "history-type", "history-system", "search-type", "search-system", "search-compartment",
    "batch", "transaction", "capabilities", "operation",
]
WRITES = frozenset({"create", "update", "patch", "delete", "conditional-create", "conditional-update",
                    "conditional-patch", "conditional-delete"})


@dataclass(slots=True)
class Request:
    """One interaction asked for. `params` is the decoded query (search parameters, a condition, `_summary`, …);
    `body` the client's bytes or an already parsed resource (a Bundle entry's); `large` says a parsed body is big
    (its work belongs off the event loop)."""

    interaction: Interaction  # a Bundle asked for over REST is a "batch" until its type says "transaction"
    caller: Caller = ANONYMOUS
    type: str | None = None
    id: str | None = None
    version_id: str | None = None
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | dict[str, Any] | None = None
    large: bool = False
    compartment: tuple[str, str] | None = None  # (type, id) of `GET Patient/123/Observation`
    operation: str | None = None  # "$status", for interaction "operation"
    media_type: str | None = None  # of the body, where it chooses a meaning (PATCH formats)
    if_match: int | None = None
    if_none_match: int | None = None
    if_modified_since: datetime | None = None
    prefer_return: str | None = None  # "minimal" | "representation" | "OperationOutcome"
    strict: bool = False  # Prefer: handling=strict
    keep_unchanged: bool = False  # an update equal to the current version makes none (connectors' re-syncs)

    @property
    def criteria(self) -> str:
        """The query as a condition (`identifier=…`), for the conditional interactions."""
        return urlencode(self.params)

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.params if key == name), None)


@dataclass(slots=True)
class Outcome:
    """What an interaction gives back: a status, and the resource version it read or wrote, and/or a body (a
    Bundle, an OperationOutcome, a subset of the version) to send instead of the version's stored bytes."""

    status: int = 200
    version: Version | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    entries: list[Any] = field(default_factory=list)  # a batch's or transaction's per-entry results, request order
    unchanged: bool = False  # an update with `keep_unchanged` found the content already current: no new version
