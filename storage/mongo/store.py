"""The MongoDB backend on PyMongo's native async client (document shapes: storage/mongo/documents.py).

Collections: `resources` (current version, body and index entries, and `created`: the change-log seq of the
resource's create, its place in the default order of a search), `history` (every version, `_id`
"Type/id/vid"), `changes` (the change log, `_id` = seq), `counters` (document `changes`: the last seq given, and
the sequencer's state), `locks` (one document per asserted condition, see `commit`) and `secrets` (the database's
random secrets: the paging cursors' MAC key). Searches, history reads and a commit's assertions run within the
search deadline (MongoDB's maxTimeMS).

The change log is numbered in one of two ways (`sequencer`, HEARTH_MONGO_SEQUENCER; docs/storage.md):
- `stream` (auto on a replica set or mongos): a commit writes its versions with `seq` (and a new resource's
  `created`) PENDING and no change row; the sequencer (storage/mongo/sequencer.py) numbers them in commit order
  from a change stream, and the commit waits (at most NUMBERING_WAIT seconds) for its numbers. No document is
  written by every commit.
- `counter` (auto without change streams: a standalone server, mongomock): the commit increments `counters` itself,
  so commits on several processes serialise on that one document (seq order is commit order: two commits both
  write it and one waits or retries), and writes its change rows.

With transactions (a replica set or mongos) a commit is one session transaction: CAS on each resource, history
(and, by the counter, change) rows. An Assertion is checked inside the transaction after upserting a lock document
keyed by a hash of its condition, so two commits asserting the same condition write-conflict: one retries and then
sees the other's write. A transaction commits with `w: majority`, and the change log is read with `readConcern:
majority` (and written with `w: majority` outside transactions), so a change a reader has seen is never rolled
back (docs/storage.md).

Without transactions (a standalone server, mongomock) only single-write commits are accepted; their
writes are not atomic across collections (a create interrupted before its `created` is set sorts last, by
type and id). Commits are serialised by an in-process asyncio lock, which also makes the check of an Assertion
and the write it guards atomic, and keeps seq visible in order, for one Hearth process only: run a replica set
(even of one node) for several processes or bundles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
from datetime import datetime
from typing import Any, Sequence

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import CollectionInvalid, DuplicateKeyError, ExecutionTimeout, PyMongoError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from hearth.search.entries import Entry
from hearth.search.ir import Query
from hearth.storage import clock, owners
from hearth.storage.base import (Assertion, AssertionFailed, AuditRecord, Change, HistoryPage, SearchPage, SearchTimedOut,
                          TransactionsUnsupported, Version, VersionConflict, Write)
from hearth.storage.mongo import expunge, search
from hearth.storage.mongo.audit_log import audit_documents
from hearth.storage.mongo.documents import (INDEX_FIELDS, PENDING, VERSION_FIELDS, change_document, check_size,
                                            current_document, history_document, history_key, index_fields,
                                            resource_key, to_change, to_version)
from hearth.storage.mongo.indexes import create_indexes
from hearth.storage.mongo.sequencer import COUNTER, LEASE_SECONDS, Sequencer

log = logging.getLogger("hearth.storage.mongo")

_MAJORITY = WriteConcern("majority")  # commits acknowledged once a majority has them (never rolled back)

SEQUENCERS = ("auto", "stream", "counter")
# seconds a commit waits for the sequencer to number its versions: past a sequencer's takeover by another process
NUMBERING_WAIT = 2 * LEASE_SECONDS


class MongoStore:
    """Store on one MongoDB database (see storage/base.py for the contract)."""

    name = "mongodb"

    def __init__(self, client: Any, database_name: str = "hearth", *, owns_client: bool = False,
                 search_timeout: float = 10.0, sequencer: str = "auto") -> None:
        """`client`: a pymongo AsyncMongoClient (or a mongomock-motor client in tests); `search_timeout`: seconds a
        search, history read or commit's assertion may run (0: no limit); `sequencer`: how the change log is
        numbered, one of SEQUENCERS (auto: `stream` where the server has change streams, else `counter`)."""
        if sequencer not in SEQUENCERS:
            raise ValueError(f"HEARTH_MONGO_SEQUENCER must be one of {', '.join(SEQUENCERS)}, not {sequencer!r}")
        self.client = client
        self.search_timeout = search_timeout
        self.db = client.get_database(database_name)
        self.resources = self.db.get_collection("resources")
        self.history_versions = self.db.get_collection("history")
        # the change log: read only once a majority has it, so a change read is never rolled back and then skipped
        self.change_log = self.db.get_collection("changes", read_concern=ReadConcern("majority"),
                                                 write_concern=_MAJORITY)
        self.counters = self.db.get_collection("counters", write_concern=_MAJORITY)
        self.locks = self.db.get_collection("locks")
        self.secrets = self.db.get_collection("secrets")
        self.audit_events = self.db.get_collection("audit_events")
        self._cursor_key: bytes | None = None
        self.supports_transactions = False
        self._owns_client = owns_client
        self._serial = asyncio.Lock()  # commits without transactions, one at a time
        self.sequencer = sequencer  # resolved by `open` to "stream" or "counter"
        self._sequencing: asyncio.Task[None] | None = None  # this process's candidacy for the sequencer

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MongoStore:
        """A store for `mongodb://host/dbname?…` (database `hearth` when the URL names none)."""
        options.pop("synchronous", None)  # a SQLite setting the app passes to every backend
        search_timeout = float(options.pop("search_timeout", 10.0))
        # a MongoDB-only setting, read here rather than passed through every entry point's settings
        sequencer = str(options.pop("sequencer", os.environ.get("HEARTH_MONGO_SEQUENCER", "auto"))).strip().lower()
        client: AsyncMongoClient = AsyncMongoClient(url, **options)
        return cls(client, client.get_default_database("hearth").name, owns_client=True, search_timeout=search_timeout,
                   sequencer=sequencer)

    async def open(self) -> None:
        """Create the collections and indexes; find out whether the server can run transactions."""
        existing = set(await self.db.list_collection_names())
        for collection in ("resources", "history", "changes", "counters", "locks"):
            if collection not in existing:  # (a transaction may not be the one to create a collection)
                try:
                    await self.db.create_collection(collection)
                except CollectionInvalid:  # another Hearth process created it meanwhile
                    pass
        await create_indexes(self.db)
        self.supports_transactions = await _server_supports_transactions(self.client)
        if not self.supports_transactions:
            log.warning("MongoDB server has no transactions (not a replica set or mongos): commits of more "
                        "than one write (transaction bundles) are refused, and conditional writes are only "
                        "safe within this one Hearth process")
        await self.counters.update_one({"_id": COUNTER}, {"$setOnInsert": {"seq": await self.last_seq()}}, upsert=True)
        chosen = self.sequencer
        if chosen == "auto":  # change streams need what transactions need: a replica set or mongos
            self.sequencer = "stream" if self.supports_transactions else "counter"
        if self.sequencer == "stream":
            log.info("MongoDB change log numbered in commit order by one leased sequencer following a change stream")
            await self._start_sequencer()
            return
        (log.warning if chosen == "auto" else log.info)(
            "MongoDB change log numbered by one counter document every commit increments (it serialises commits "
            "across processes; HEARTH_MONGO_SEQUENCER=counter%s)", ": the server has no change streams" * (chosen == "auto"))
        if await self.history_versions.find_one({"seq": PENDING}, {"_id": 1}) is not None:
            log.error("versions left unnumbered by the change-log sequencer (HEARTH_MONGO_SEQUENCER=stream) are "
                      "not numbered by the counter: run a process with the sequencer until they are")

    async def _start_sequencer(self) -> None:
        """Record where the sequencer's first change stream starts, before any version of this process is left
        pending (the first process's time stands), and become a candidate for the sequencer."""
        start = await _cluster_time(self.client, self.counters)
        if start is not None:
            await self.counters.update_one({"_id": COUNTER, "resume": {"$exists": False}, "start": {"$exists": False}},
                                           {"$set": {"start": start}})
        self._sequencing = asyncio.create_task(Sequencer(self, owners.new_owner()).run())

    async def close(self) -> None:
        if self._sequencing is not None:
            self._sequencing.cancel()  # (its lease is given up: another process's sequencer takes over at once)
            await asyncio.gather(self._sequencing, return_exceptions=True)
            self._sequencing = None
        if self._owns_client:
            await self.client.close()

    def readiness_problem(self) -> str | None:
        """None: MongoDB stops each operation itself at its maxTimeMS, so no thread of this process waits on one."""
        return None

    async def cursor_key(self) -> bytes:
        """The database's paging-cursor MAC key: made by the first Hearth process to need it, then read once."""
        if self._cursor_key is None:
            document = await self.secrets.find_one_and_update(
                {"_id": "cursor"}, {"$setOnInsert": {"key": os.urandom(32)}}, upsert=True,
                return_document=ReturnDocument.AFTER)
            self._cursor_key = bytes(document["key"])
        return self._cursor_key

    # -- reading ---------------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> Version | None:
        document = await self.resources.find_one({"_id": resource_key(resource_type, resource_id)},
                                                 VERSION_FIELDS)
        return to_version(document) if document else None

    async def vread(self, resource_type: str, resource_id: str, version_id: int) -> Version | None:
        document = await self.history_versions.find_one({"_id": history_key(resource_type, resource_id, version_id)},
                                                        VERSION_FIELDS)
        return to_version(document) if document else None

    async def history(self, resource_type: str | None, resource_id: str | None, since: datetime | None,
                      before_seq: int | None, count: int, at: datetime | None = None, *,
                      total: bool = False) -> HistoryPage:
        """(The total counts the versions the filters match only when asked for, and not when the first page
        holds them all.)"""
        where: dict[str, Any] = {}
        if resource_type is not None:
            where["type"] = resource_type
        if resource_id is not None:
            where["id"] = resource_id
        updated: dict[str, str] = {}
        if since is not None:
            updated["$gte"] = clock.to_text(since)
        if at is not None:
            updated["$lte"] = clock.to_text(at)
        if updated:
            where["last_updated"] = updated
        page_where = {**where, "seq": {"$lt": before_seq}} if before_seq is not None else where
        deadline = search.Deadline(self.search_timeout)
        documents = []
        counted = None
        try:
            if count > 0:
                cursor = self.history_versions.find(page_where, {**VERSION_FIELDS, "seq": 1},
                                                    max_time_ms=deadline.ms())
                documents = await cursor.sort("seq", DESCENDING).limit(count).to_list(None)
            if total and before_seq is None and len(documents) < count:
                counted = len(documents)
            elif total:
                counted = await self.history_versions.count_documents(where, **deadline.count_options())
        except ExecutionTimeout:
            raise SearchTimedOut(self.search_timeout) from None
        return HistoryPage([(d["seq"], to_version(d)) for d in documents], counted)

    async def changes(self, after_seq: int, limit: int) -> list[Change]:
        documents = await self.change_log.find({"_id": {"$gt": after_seq}}).sort("_id", ASCENDING) \
            .limit(limit).to_list(None)
        return [to_change(d) for d in documents]

    async def last_seq(self) -> int:
        newest = await self.change_log.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        return newest["_id"] if newest else 0

    async def search(self, query: Query) -> SearchPage:
        try:
            return await search.execute(self.resources, query, search.Deadline(self.search_timeout))
        except ExecutionTimeout:
            raise SearchTimedOut(self.search_timeout) from None

    async def reindex(self, items: Sequence[tuple[str, str, int, Sequence[Entry]]]) -> None:
        for resource_type, resource_id, version_id, entries in items:
            fields = index_fields(entries)
            update: dict[str, Any] = {"$unset": {name: "" for name in INDEX_FIELDS if name not in fields}}
            if fields:
                update["$set"] = fields
            await self.resources.update_one({"_id": resource_key(resource_type, resource_id),
                                             "version_id": version_id, "deleted": False}, update)

    async def expunge(self, resource_type: str | None, resource_id: str | None, *, deleted: bool, previous: bool,
                      limit: int) -> int:
        return await expunge.expunge(self, resource_type, resource_id, deleted, previous, limit)

    async def expunge_everything(self) -> int:
        return await expunge.expunge_everything(self)

    # -- writing ---------------------------------------------------------------------------------

    async def rewrite(self, write: Write) -> None:
        document = current_document(write)
        check_size(write, document)
        key = document.pop("_id")
        gone = {name: "" for name in INDEX_FIELDS if name not in document}
        # the current document first: its compare-and-set decides; the history copy follows (one document each: a
        # crash between the two leaves only a vread of this version with the older meta). Not current: an earlier
        # version, whose history copy alone changes (a tombstone's never matches)
        async with self._serial:
            result = await self.resources.update_one(
                {"_id": key, "version_id": write.version_id, "deleted": False},
                {"$set": document, **({"$unset": gone} if gone else {})})
            earlier = await self.history_versions.update_one({"_id": f"{key}/{write.version_id}", "deleted": False},
                                                             {"$set": {"body": write.body}})
            if result.matched_count != 1 and earlier.matched_count != 1:
                raise await self._conflict(write)  # (`write.previous` is the version it expected)

    async def commit(self, writes: Sequence[Write], assertions: Sequence[Assertion] = (),
                     audit: Sequence[AuditRecord] = ()) -> list[Change]:
        try:
            return await self._commit(writes, assertions, audit)
        except ExecutionTimeout:  # an assertion's search: past its deadline it would hold up the writes after it
            raise SearchTimedOut(self.search_timeout) from None

    async def _commit(self, writes: Sequence[Write], assertions: Sequence[Assertion],
                      audit: Sequence[AuditRecord]) -> list[Change]:
        if self.supports_transactions:
            try:
                async with self.client.start_session() as session:
                    changes = await session.with_transaction(lambda s: self._apply(writes, assertions, s, audit),
                                                             write_concern=_MAJORITY)
            except _Taken as taken:
                raise await self._conflict(taken.write) from None
        else:
            if len(writes) > 1:
                raise TransactionsUnsupported(
                    "this MongoDB server has no transactions (run a replica set): one write per commit")
            async with self._serial:
                try:
                    changes = await self._apply(writes, assertions, None, audit)
                except _Taken as taken:
                    raise await self._conflict(taken.write) from None
        return await self._numbered(changes) if self.sequencer == "stream" else changes

    async def _apply(self, writes: Sequence[Write], assertions: Sequence[Assertion], session: Any,
                     audit: Sequence[AuditRecord] = ()) -> list[Change]:
        """All of a commit's reads and writes, and its audit records; inside a transaction when `session` is
        given."""
        for assertion in assertions:
            if session is not None:  # two transactions asserting the same condition now conflict
                await self.locks.update_one({"_id": _condition_key(assertion)}, {"$inc": {"n": 1}}, upsert=True,
                                            session=session)
            ids = await search.match_ids(self.resources, assertion.query, search.Deadline(self.search_timeout), session)
            if ids != assertion.ids:
                raise AssertionFailed(assertion, ids)
        for write in writes:
            await self._swap_current(write, session)
        if not writes:
            return []
        seqs = await self._numbers(len(writes), session)
        changes = []
        for seq, write in zip(seqs, writes):
            history = history_document(write, seq)
            if seq != PENDING and write.previous == 0:  # by the counter: the create's place in creation order
                await self.resources.update_one({"_id": resource_key(write.type, write.id)}, {"$set": {"created": seq}},
                                                session=session)
            await self.history_versions.insert_one(history, session=session)
            if seq != PENDING:
                await self.change_log.insert_one(change_document(history, seq), session=session)
            changes.append(Change(seq, write.type, write.id, write.version_id, write.interaction, write.last_updated))
        if audit:
            await self.audit_events.insert_many(audit_documents(audit), session=session)
        return changes

    async def _numbers(self, count: int, session: Any) -> list[int]:
        """The seqs of a commit's `count` versions: from the counter, or PENDING each for the sequencer to give."""
        if self.sequencer == "stream":
            return [PENDING] * count
        counter = await self.counters.find_one_and_update(
            {"_id": COUNTER}, {"$inc": {"seq": count}}, upsert=True, return_document=ReturnDocument.AFTER,
            session=session)
        return list(range(counter["seq"] - count + 1, counter["seq"] + 1))

    async def _numbered(self, changes: list[Change]) -> list[Change]:
        """`changes` with the seqs the sequencer gives them, waited for at most NUMBERING_WAIT seconds (a change not
        numbered by then keeps seq 0, Store.commit)."""
        wanted = {history_key(c.type, c.id, c.version_id): c for c in changes}
        found: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + NUMBERING_WAIT, 0.001
        while True:
            documents = await self.history_versions.find({"_id": {"$in": list(wanted)}, "seq": {"$ne": PENDING}},
                                                         {"seq": 1}).to_list(None)
            found.update((document["_id"], document["seq"]) for document in documents)
            if len(found) == len(wanted) or loop.time() >= deadline:
                break
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        if len(found) < len(wanted):
            log.warning("%d committed versions not numbered within %g s: is the change-log sequencer stuck?",
                        len(wanted) - len(found), NUMBERING_WAIT)
        return [dataclasses.replace(change, seq=found.get(key, 0)) for key, change in wanted.items()]

    async def _swap_current(self, write: Write, session: Any) -> None:
        """Compare-and-set the current document: it must still be at `write.previous` (0: absent). A new one is
        `created` PENDING (last in creation order) until numbered; a later version keeps the fields it does not set:
        `created` (a delete and a create again too). WriteTooLarge (before any write of the commit without
        transactions: its only one) for a document over MongoDB's limit."""
        document = current_document(write)
        check_size(write, document)
        if write.previous == 0:
            try:
                await self.resources.insert_one({**document, "created": PENDING}, session=session)
            except DuplicateKeyError:
                raise _Taken(write) from None
            return
        key = document.pop("_id")
        gone = {name: "" for name in INDEX_FIELDS if name not in document}
        result = await self.resources.update_one({"_id": key, "version_id": write.previous},
                                                  {"$set": document, **({"$unset": gone} if gone else {})},
                                                  session=session)
        if result.matched_count != 1:
            raise _Taken(write)

    async def _conflict(self, write: Write) -> VersionConflict:
        current = await self.resources.find_one({"_id": resource_key(write.type, write.id)}, {"version_id": 1})
        return VersionConflict(write.type, write.id, write.previous, current["version_id"] if current else 0)


class _Taken(Exception):
    """A write's compare-and-set failed; the actual version is read after the transaction has ended."""

    def __init__(self, write: Write) -> None:
        super().__init__(f"{write.type}/{write.id} is no longer at version {write.previous}")
        self.write = write


def _condition_key(assertion: Assertion) -> str:
    """The same condition (clauses in any order) gives the same lock document."""
    query = assertion.query
    text = repr((sorted(query.types), sorted(repr(clause) for clause in query.where)))
    return hashlib.sha256(text.encode()).hexdigest()


async def _cluster_time(client: Any, counters: Any) -> Any:
    """The cluster's time now (the operation time of a read in a session); None where there are no sessions
    (mongomock)."""
    try:
        async with client.start_session() as session:
            await counters.find_one({"_id": COUNTER}, {"_id": 1}, session=session)
            return session.operation_time
    except NotImplementedError:
        return None


async def _server_supports_transactions(client: Any) -> bool:
    """A replica set member or a mongos can run transactions; a standalone server or mongomock cannot."""
    try:
        hello = await client.get_database("admin").command("hello")
    except (NotImplementedError, PyMongoError):
        return False
    return "setName" in hello or hello.get("msg") == "isdbgrid"
