"""The MongoDB backend on PyMongo's native async client (document shapes: storage/mongo/documents.py).

Collections: `resources` (current version, body and index entries, and `created`: the change-log seq of the
resource's create, its place in the default order of a search), `history` (every version, `_id`
"Type/id/vid"), `changes` (the change log, `_id` = seq), `counters` (the seq), `locks` (one document per
asserted condition, see `commit`) and `secrets` (the database's random secrets: the paging cursors' MAC key).
Searches, history reads and a commit's assertions run within the search deadline (MongoDB's maxTimeMS).

With transactions (a replica set or mongos) a commit is one session transaction: CAS on each resource,
the seq from `counters` incremented in the same transaction (so seq order is commit order: two commits
both write the counter document and one waits or retries), history and change rows. An Assertion is
checked inside the transaction after upserting a lock document keyed by a hash of its condition, so two
commits asserting the same condition write-conflict: one retries and then sees the other's write. A
transaction commits with `w: majority`, and the change log is read with `readConcern: majority` (and written with
`w: majority` outside transactions), so a change a reader has seen is never rolled back (docs/storage.md).

Without transactions (a standalone server, mongomock) only single-write commits are accepted; their
writes are not atomic across collections (a create interrupted before its `created` is set sorts first, by
type and id, as the documents of databases made before resources carried `created` do). Commits are
serialised by an in-process asyncio lock, which also makes the check of an Assertion and the write it guards
atomic, and keeps seq visible in order, for one Hearth process only: run a replica set (even of one node) for
several processes or bundles.
"""

from __future__ import annotations

import asyncio
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
from hearth.storage import clock
from hearth.storage.base import (Assertion, AssertionFailed, AuditRecord, Change, HistoryPage, SearchPage, SearchTimedOut,
                          TransactionsUnsupported, Version, VersionConflict, Write)
from hearth.storage.mongo import expunge, search
from hearth.storage.mongo.audit_log import audit_documents
from hearth.storage.mongo.documents import (INDEX_FIELDS, VERSION_FIELDS, change_document, check_size,
                                            current_document, history_document, index_fields, resource_key,
                                            to_change, to_version)
from hearth.storage.mongo.indexes import create_indexes

log = logging.getLogger("hearth.storage.mongo")

_MAJORITY = WriteConcern("majority")  # commits acknowledged once a majority has them (never rolled back)


class MongoStore:
    """Store on one MongoDB database (see storage/base.py for the contract)."""

    name = "mongodb"

    def __init__(self, client: Any, database_name: str = "hearth", *, owns_client: bool = False,
                 search_timeout: float = 10.0) -> None:
        """`client`: a pymongo AsyncMongoClient (or a mongomock-motor client in tests); `search_timeout`: seconds a
        search, history read or commit's assertion may run (0: no limit)."""
        self.client = client
        self.search_timeout = search_timeout
        self.db = client.get_database(database_name)
        self.resources = self.db.get_collection("resources")
        self.history_versions = self.db.get_collection("history")
        # the change log: read only once a majority has it, so a change read is never rolled back and then skipped
        self.change_log = self.db.get_collection("changes", read_concern=ReadConcern("majority"),
                                                 write_concern=_MAJORITY)
        self.counters = self.db.get_collection("counters")
        self.locks = self.db.get_collection("locks")
        self.secrets = self.db.get_collection("secrets")
        self.audit_events = self.db.get_collection("audit_events")
        self._cursor_key: bytes | None = None
        self.supports_transactions = False
        self._owns_client = owns_client
        self._serial = asyncio.Lock()  # commits without transactions, one at a time

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MongoStore:
        """A store for `mongodb://host/dbname?…` (database `hearth` when the URL names none)."""
        options.pop("synchronous", None)  # a SQLite setting the app passes to every backend
        search_timeout = float(options.pop("search_timeout", 10.0))
        client: AsyncMongoClient = AsyncMongoClient(url, **options)
        return cls(client, client.get_default_database("hearth").name, owns_client=True, search_timeout=search_timeout)

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

    async def close(self) -> None:
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
        document = await self.history_versions.find_one({"_id": f"{resource_type}/{resource_id}/{version_id}"},
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
                    return await session.with_transaction(lambda s: self._apply(writes, assertions, s, audit),
                                                          write_concern=_MAJORITY)
            except _Taken as taken:
                raise await self._conflict(taken.write) from None
        if len(writes) > 1:
            raise TransactionsUnsupported(
                "this MongoDB server has no transactions (run a replica set): one write per commit")
        async with self._serial:
            try:
                return await self._apply(writes, assertions, None, audit)
            except _Taken as taken:
                raise await self._conflict(taken.write) from None

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
        counter = await self.counters.find_one_and_update(
            {"_id": "changes"}, {"$inc": {"seq": len(writes)}}, upsert=True, return_document=ReturnDocument.AFTER,
            session=session)
        first = counter["seq"] - len(writes) + 1
        changes = []
        for seq, write in enumerate(writes, first):
            if write.previous == 0:  # a create: its seq is its place in creation order, the default search order
                await self.resources.update_one({"_id": resource_key(write.type, write.id)}, {"$set": {"created": seq}},
                                                session=session)
            await self.history_versions.insert_one(history_document(write, seq), session=session)
            await self.change_log.insert_one(change_document(write, seq), session=session)
            changes.append(Change(seq, write.type, write.id, write.version_id, write.interaction, write.last_updated))
        if audit:
            await self.audit_events.insert_many(audit_documents(audit), session=session)
        return changes

    async def _swap_current(self, write: Write, session: Any) -> None:
        """Compare-and-set the current document: it must still be at `write.previous` (0: absent). A later version
        keeps the fields it does not set: `created` (a delete and a create again too). WriteTooLarge (before any
        write of the commit without transactions: its only one) for a document over MongoDB's limit."""
        document = current_document(write)
        check_size(write, document)
        if write.previous == 0:
            try:
                await self.resources.insert_one(document, session=session)
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


async def _server_supports_transactions(client: Any) -> bool:
    """A replica set member or a mongos can run transactions; a standalone server or mongomock cannot."""
    try:
        hello = await client.get_database("admin").command("hello")
    except (NotImplementedError, PyMongoError):
        return False
    return "setName" in hello or hello.get("msg") == "isdbgrid"
