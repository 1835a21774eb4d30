"""The Store protocol every backend implements, and the records it deals in.

A backend keeps, per resource, the current version (with its search index entries) apart from its
history, and appends one change-log row per version in the same transaction (DESIGN.md, "Data model").
Bodies are opaque bytes: written once with `id` and `meta` already set, served back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, Sequence

from search.entries import Entry
from search.ir import Query


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource; `body` is b"" for a delete (tombstone)."""

    type: str
    id: str
    version_id: int
    last_updated: datetime  # UTC, microseconds
    deleted: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class Write:
    """A new version to commit. `previous` is the version id that must still be current (0: none yet),
    so that concurrent writers of one resource cannot both win (compare-and-set)."""

    type: str
    id: str
    version_id: int
    last_updated: datetime
    body: bytes | None  # None writes a tombstone (delete)
    entries: Sequence[Entry]
    previous: int
    interaction: str  # "create" | "update" | "delete"


@dataclass(frozen=True, slots=True)
class Assertion:
    """A condition checked inside the commit: `query` must match exactly `ids` (empty: nothing)."""

    query: Query
    ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Change:
    """A change-log row: sequence numbers increase monotonically with every committed version."""

    seq: int
    type: str
    id: str
    version_id: int
    interaction: str
    last_updated: datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[tuple[int, Version]]  # (change seq, version), newest first
    total: int


@dataclass(slots=True)
class SearchPage:
    matches: list[Version]
    included: list[Version] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


class VersionConflict(Exception):
    """The resource's current version is no longer the one the write was based on."""

    def __init__(self, resource_type: str, resource_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{resource_type}/{resource_id}: expected version {expected}, found {actual}")
        self.type, self.id, self.expected, self.actual = resource_type, resource_id, expected, actual

    def __reduce__(self) -> tuple:  # crosses from a writer process (storage/sqlite/writer.py)
        return VersionConflict, (self.type, self.id, self.expected, self.actual)


class AssertionFailed(Exception):
    """A commit's Assertion no longer holds (a concurrent write changed what the query matches)."""

    def __init__(self, assertion: Assertion, ids: frozenset[str]) -> None:
        super().__init__(f"condition now matches {sorted(ids)}")
        self.assertion, self.ids = assertion, ids

    def __reduce__(self) -> tuple:
        return AssertionFailed, (self.assertion, self.ids)


class TransactionsUnsupported(Exception):
    """The backend cannot commit several writes atomically (e.g. MongoDB without a replica set)."""


class Store(Protocol):
    """What interactions need from storage. All methods are safe to call concurrently."""

    name: str
    supports_transactions: bool

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (possibly a tombstone), or None if the resource never existed."""

    async def vread(self, resource_type: str, resource_id: str, version_id: int) -> Version | None: ...

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = ()) -> list[Change]:
        """Commit all writes atomically, or none. Raises VersionConflict / AssertionFailed /
        TransactionsUnsupported (more than one write on a backend without transactions)."""

    async def history(self, resource_type: str | None, resource_id: str | None, since: datetime | None,
                      before_seq: int | None, count: int, at: datetime | None = None) -> HistoryPage:
        """Versions newest first, optionally filtered; `before_seq` pages (exclusive upper bound)."""

    async def changes(self, after_seq: int, limit: int) -> list[Change]:
        """Change-log rows with seq > after_seq, oldest first."""

    async def search(self, query: Query) -> SearchPage: ...

    async def reindex(self, items: Sequence[tuple[str, str, Sequence[Entry]]]) -> None:
        """Replace the index entries of existing current resources (type, id, entries) without a new version:
        for search parameters added or changed at run time. Unknown or deleted resources are skipped."""

    async def close(self) -> None: ...
