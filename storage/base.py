"""The Store protocol every backend implements, and the records it deals in.

A backend keeps, per resource, the current version (with its search index entries) apart from its
history, and appends one change-log row per version in the same transaction (DESIGN.md, "Data model").
Bodies are opaque bytes: written once with `id` and `meta` already set, served back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, Sequence

from hearth.search.entries import Entry
from hearth.search.ir import Query


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
class AuditRecord:
    """One AuditEvent (security/audit.py), appended to the audit log, never changed; the columns it is searched by
    beside its body. `recorded` is an instant as text (`2026-12-03T10:00:00.123456Z`: it sorts as it reads)."""

    id: str
    recorded: str
    agent: str  # the client (or "anonymous", "subscription/ID", "connector/NAME"), and the user after a space
    outcome: str  # "0" success, "4" refused or failed on the client's account, "8" failed on Hearth's
    patients: tuple[str, ...]  # ids of the Patients whose data was accessed
    entities: tuple[str, ...]  # `Type/id` of every resource accessed
    body: bytes


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """A search of the audit log: every given condition holds; newest first (by `recorded`, then id), `count` at
    most, after `before` (the (recorded, id) of the previous page's last record) in that order."""

    since: str | None = None  # recorded >= since
    until: str | None = None  # recorded <= until
    agent: str | None = None  # a word of `agent` (the client or the user)
    entity: str | None = None
    patient: str | None = None
    outcome: str | None = None
    count: int = 20
    before: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Assertion:
    """A condition checked inside the commit: `query` must match exactly `ids` (empty: nothing)."""

    query: Query
    ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Change:
    """A change-log row: sequence numbers increase monotonically with every committed version, in commit order,
    without gaps a reader could see filled later."""

    seq: int
    type: str
    id: str
    version_id: int
    interaction: str
    last_updated: datetime


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[tuple[int, Version]]  # (change seq, version), newest first
    total: int | None = None  # only when asked for


@dataclass(slots=True)
class SearchPage:
    """One page of a search (search/ir.py Query): its matches in the search's order, what its includes bring along,
    and where it lies in that order, for paging (search/paging.py)."""

    matches: list[Version]
    included: list[Version] = field(default_factory=list)
    total: int | None = None
    first: tuple | None = None  # the key values (Keyset.values) of the first match, in the order of the page
    last: tuple | None = None  # ... and of the last
    more: bool = False  # more matches lie beyond the page, in the direction it was read
    included_cut: bool = False  # the includes reached Query.include_limit: the rest were left out


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


class SearchRefused(Exception):
    """A search the backend stopped or cannot run (as a search, a commit's assertion or a history read); the
    interactions answer it as an OperationOutcome (interactions/search.py)."""


class SearchTimedOut(SearchRefused):
    """The work ran past the backend's deadline (`search_timeout` seconds) and was stopped."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:g} s")
        self.seconds = seconds

    def __reduce__(self) -> tuple:  # crosses from the SQLite writer process
        return SearchTimedOut, (self.seconds,)


class SearchTooNested(SearchRefused):
    """Chains and `_has` nest `depth` levels deep, more than `backend` compiles (`most`: the deepest it does)."""

    def __init__(self, depth: int, most: int, backend: str) -> None:
        super().__init__(f"nested {depth} levels deep, more than the {most} levels {backend} compiles")
        self.depth, self.most, self.backend = depth, most, backend

    def __reduce__(self) -> tuple:
        return SearchTooNested, (self.depth, self.most, self.backend)


class KeysetMismatch(SearchRefused):
    """`Query.after` holds more or fewer values than the search's order has keys (a place in another order)."""


class StoreClosing(Exception):
    """The store is closing and takes no more work."""


class WriteTooLarge(Exception):
    """A version would be stored as a document larger than the backend holds (MongoDB: 16 MiB of BSON, body and
    index entries together); nothing of its commit is written."""

    def __init__(self, resource_type: str, resource_id: str, size: int, limit: int) -> None:
        super().__init__(f"{resource_type}/{resource_id} would be stored as {size} bytes, over the limit of {limit}")
        self.type, self.id, self.size, self.limit = resource_type, resource_id, size, limit


@dataclass(frozen=True, slots=True)
class Lease:
    """`name` held by `owner` until `until` (epoch seconds by the store's clock). `token` grows every time the lease
    changes hands: a fencing token, so that a write made under an older one is refused (`Records.put(fence=…)`)."""

    name: str
    owner: str
    token: int
    until: float


class LeaseLost(Exception):
    """A write was fenced by a lease its writer no longer holds (it expired, or another owner took it)."""

    def __init__(self, lease: Lease) -> None:
        super().__init__(f"lease {lease.name!r} (token {lease.token}) is no longer held by {lease.owner}")
        self.lease = lease

    def __reduce__(self) -> tuple:  # crosses from the SQLite writer process
        return LeaseLost, (self.lease,)


class Store(Protocol):
    """What interactions need from storage. All methods are safe to call concurrently."""

    name: str
    supports_transactions: bool

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        """The current version (possibly a tombstone), or None if the resource never existed."""

    async def vread(self, resource_type: str, resource_id: str, version_id: int) -> Version | None: ...

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = (),
                     audit: Sequence[AuditRecord] = ()) -> list[Change]:
        """Commit all writes atomically, or none, and the `audit` records with them (storage/*/audit_log.py); their
        change-log rows, in order. A backend that numbers the change log after the commit (MongoDB's sequencer,
        storage/mongo/sequencer.py) waits a bounded time for the numbers: a change still unnumbered then has seq 0
        (committed all the same; its row follows in the change log). Raises VersionConflict / AssertionFailed /
        TransactionsUnsupported (more than one write on a backend without transactions) / SearchRefused (an
        assertion's search)."""

    async def history(self, resource_type: str | None, resource_id: str | None, since: datetime | None,
                      before_seq: int | None, count: int, at: datetime | None = None, *,
                      total: bool = False) -> HistoryPage:
        """Versions newest first, optionally filtered; `before_seq` pages (exclusive upper bound); `total`: count
        every version the filters match too (a read of them all). Raises SearchTimedOut past the deadline."""

    async def changes(self, after_seq: int, limit: int) -> list[Change]:
        """Change-log rows with seq > after_seq, oldest first."""

    async def last_seq(self) -> int:
        """The change log's newest sequence number (0: empty)."""

    async def search(self, query: Query) -> SearchPage:
        """One page of `query`: matches in its order (search/ir.py), after `query.after` when set, its includes
        (search/ir.py include_steps) and its total when asked. Raises SearchRefused."""

    async def cursor_key(self) -> bytes:
        """The database's secret that signs paging cursors (search/paging.py): the same for every process on it."""

    async def reindex(self, items: Sequence[tuple[str, str, int, Sequence[Entry]]]) -> None:
        """Replace the index entries of current resources (type, id, version_id, entries) without a new version:
        for search parameters added or changed at run time. A resource whose current version is no longer
        `version_id` (updated or deleted since its entries were extracted) is skipped: its newer version's entries
        stand."""

    async def rewrite(self, write: Write) -> None:
        """Replace the body of version `write.version_id` in place, without a new version or change-log row: what
        `$meta-add`/`$meta-delete` change (R4 does not version tags, security labels and profiles). The current
        version gets its index entries replaced too; an earlier one only its history body (the index holds the
        current version's). Raises VersionConflict when the version is a tombstone or not stored."""

    async def expunge(self, resource_type: str | None, resource_id: str | None, *, deleted: bool, previous: bool,
                      limit: int) -> int:
        """Remove for good up to `limit` versions in scope (a type, one resource, or all with None), with their
        change-log rows: versions older than the current one (`previous`), and every version of deleted resources
        (`deleted`; the resource itself goes with its tombstone, after its older versions). Sequence numbers are
        not reused. How many versions were removed (fewer than `limit`: nothing more to remove)."""

    async def expunge_everything(self) -> int:
        """Remove every resource, version, index entry and change-log row; how many versions."""

    async def close(self) -> None: ...


class Records(Protocol):
    """Small durable records kept beside the data, each a JSON document under (kind, name), in a table or
    collection of their own (storage/*/records.py): the authorization server's (clients, keys, codes…) in
    `security_records`, the connectors' (checkpoints, sync state, dead letters, leases) in `connector_records`."""

    async def open(self) -> None: ...

    async def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    async def get_many(self, kind: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The records found among `names`, by name."""

    async def put(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None, *,
                  fence: Lease | None = None) -> None:
        """Store (or replace) a record; `expires` (epoch seconds) lets it be purged after. With `fence`, only while
        that lease is held (else LeaseLost, nothing written), and never over a record written under a newer one."""

    async def put_many(self, kind: str, documents: dict[str, dict[str, Any]]) -> None:
        """Store (or replace) several records of one kind at once, by name."""

    async def add(self, kind: str, name: str, document: dict[str, Any], expires: float | None = None) -> bool:
        """Store a record only if none lives under that name (False: one did): single use, across processes."""

    async def take(self, kind: str, name: str) -> dict[str, Any] | None:
        """Remove a record and return it (None if absent): at most one caller gets it."""

    async def delete(self, kind: str, name: str) -> bool: ...

    async def list(self, kind: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The records of a kind, by name (the first `limit`)."""


@dataclass(frozen=True, slots=True)
class NewInboxRow:
    """A received HL7 v2 message for `Hl7Inbox.receive`: `key` the sha256 hex of MSH-3 \\x1f MSH-4 \\x1f MSH-10,
    `digest` the sha256 hex of `raw`; `state` pending, or rejected (with its `ack`) for an AE/AR before commit."""

    key: str
    digest: str
    raw: bytes
    charset: str
    header: dict[str, Any]
    state: str = "pending"
    ack: bytes | None = None
    app_ack: bytes | None = None
    error: str | None = None
    result: Any = None


@dataclass(frozen=True, slots=True)
class InboxRow:
    """One stored inbox row (times in epoch seconds; `settled` None while pending)."""

    seq: int
    connector: str
    key: str
    digest: str
    state: str
    received: float
    settled: float | None
    raw: bytes
    charset: str
    header: dict[str, Any]
    ack: bytes | None
    app_ack: bytes | None
    owner: str | None
    lease_until: float
    attempts: int
    error: str | None
    result: Any


class Hl7Inbox(Protocol):
    """The HL7 v2 connectors' durable raw message store (storage/*/hl7_inbox.py): written before the ACK, one row per
    (connector, key) for duplicate detection, claimed in arrival (seq) order by the converter."""

    async def open(self) -> None: ...

    async def receive(self, connector: str, rows: Sequence[NewInboxRow]) -> list[InboxRow | None]:
        """Insert each row unless its (connector, key) is stored (one atomic job): per row the stored one, or None."""

    async def get(self, connector: str, key: str) -> InboxRow | None: ...

    async def claim(self, connector: str, owner: str, limit: int, lease_seconds: float) -> list[InboxRow]:
        """Lease up to `limit` pending rows (unleased or lease expired) in seq order, counting an attempt each."""

    async def settle(self, connector: str, seq: int, state: str | None, ack: bytes | None = None,
                     app_ack: bytes | None = None, error: str | None = None, result: Any = None) -> bool:
        """End a row's lease in `state` (None: keep it); None values keep what is stored. False: no such row."""

    async def reopen(self, connector: str, seq: int) -> bool:
        """Put a settled row back to pending (a dead letter retried). False: no such row."""

    async def release(self, connector: str) -> int:
        """End every pending row's lease: their converter is gone (the caller now holds the connector's own
        lease, so no other converter runs); how many."""

    async def counts(self, connector: str) -> tuple[int, float | None]:
        """The pending rows' count and the oldest one's `received` (None when there are none)."""

    async def purge(self, connector: str, before: float) -> int:
        """Delete the settled rows settled before `before` (epoch seconds); how many."""


class Leases(Protocol):
    """Named leases judged by the store's clock (not each host's), so that one process of many holds each: the
    group's once-only work (server/leadership.py), a connector's passes (connectors/state.py), the SearchParameter
    re-index. Judged by the store: SQLite's one machine, MongoDB's primary (storage/*/leases.py)."""

    async def open(self) -> None: ...

    async def acquire(self, name: str, owner: str, seconds: float) -> Lease | None:
        """Hold `name` for `seconds` from now: renewed (same token) if `owner` holds it, taken (token + 1) if it is
        free or expired; None while another owner holds it."""

    async def release(self, lease: Lease) -> bool:
        """Give the lease up (expire it now) if it is still held under `lease.token`; False if it was not."""

    async def holder(self, name: str) -> Lease | None:
        """The lease as stored (possibly expired), or None if it was never taken."""

    async def now(self) -> float:
        """The store's clock, epoch seconds."""


class ExportJobs(Protocol):
    """Bulk Data export jobs (interactions/export/jobs.py), each a JSON document under its id; the fields they are
    queried by (`state`, `lease_owner`, `lease_until`, `expires`) are kept beside it as columns or fields.

    States: "accepted" (waiting for a worker), "in-progress" (leased by one), "completed", "failed". A job is
    claimed with a lease, so only one worker of any process writes it; a cancelled job is removed."""

    async def open(self) -> None: ...

    async def add(self, job: dict[str, Any], limit: int) -> bool:
        """Store a new job unless `limit` jobs are already accepted or in progress (False then); atomic across the
        processes on one database."""

    async def get(self, job_id: str) -> dict[str, Any] | None: ...

    async def claim(self, owner: str, lease_seconds: float, now: float) -> dict[str, Any] | None:
        """Lease one accepted or in-progress job whose lease has run out to `owner` (state in-progress), oldest
        first; None when there is none."""

    async def save(self, job: dict[str, Any], owner: str) -> bool:
        """Replace a leased job's document (its lease renewed or given up through its fields), only while `owner`
        still holds it; False when it does not (the job was cancelled, or its lease taken over)."""

    async def release(self, owner: str) -> int:
        """Give up `owner`'s leases (a stopping worker, or a dead one): its jobs wait for the next worker."""

    async def owners(self) -> list[str]:
        """The owners of the jobs in progress (the workers holding a lease, live or dead)."""

    async def remove(self, job_id: str) -> bool: ...

    async def expired(self, now: float) -> list[str]:
        """Ids of finished jobs whose files expired before `now`."""
