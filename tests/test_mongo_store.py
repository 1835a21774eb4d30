"""What is particular to the MongoDB store (the shared contract is tests/test_store_contract.py): opening,
URLs, the document shape, the creation order of documents written before they carried it, the transaction code
path.

Runs on mongomock-motor always, and also on a real MongoDB when HEARTH_TEST_MONGODB_URL is set.
"""

from __future__ import annotations

import os
import uuid

import pytest
from mongomock_motor import AsyncMongoMockClient

from hearth.search.entries import DateEntry, ReferenceEntry, StringEntry
from hearth.search.ir import Query
from hearth.search.paging import places
from hearth.storage.base import Assertion, AssertionFailed, VersionConflict
from hearth.storage.mongo.store import MongoStore
from test_store_contract import by_family, write

MONGODB_URL = os.environ.get("HEARTH_TEST_MONGODB_URL")
SERVERS = ["mongomock", *(["mongodb"] if MONGODB_URL else [])]


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest):
    """A fresh MongoStore: mongomock, or the real server of HEARTH_TEST_MONGODB_URL (its own database)."""
    database = f"hearth_test_{uuid.uuid4().hex[:12]}"
    if request.param == "mongomock":
        client = AsyncMongoMockClient()
    else:
        from pymongo import AsyncMongoClient
        client = AsyncMongoClient(MONGODB_URL)
    mongo_store = MongoStore(client, database)
    await mongo_store.open()
    yield mongo_store
    if request.param == "mongodb":
        await client.drop_database(database)
        await client.close()


async def test_open_on_mongomock_has_no_transactions():
    store = MongoStore(AsyncMongoMockClient(), "hearth_open")
    await store.open()
    assert store.supports_transactions is False and store.name == "mongodb"
    assert {"resources", "history", "changes", "counters", "locks"} <= set(await store.db.list_collection_names())
    await store.open()  # again: nothing to create, no error


async def test_from_url_takes_database_from_path():
    assert MongoStore.from_url("mongodb://localhost:1/clinic?serverSelectionTimeoutMS=10").db.name == "clinic"
    default = MongoStore.from_url("mongodb://localhost:1/", synchronous="FULL")
    assert default.db.name == "hearth"
    await default.close()


async def test_entries_live_in_typed_arrays(store):
    await store.commit([write("Observation", "e", 1, entries=[DateEntry("date", "2020-01-01T00:00:00.000000",
                                                                        "2020-01-01T23:59:59.999999")])])
    await store.commit([write("Observation", "e", 2, entries=[ReferenceEntry("subject", "Patient", "p1")])])
    document = await store.resources.find_one({"_id": "Observation/e"})
    assert "dt" not in document and document["ref"] == [{"p": "subject", "t": "Patient", "i": "p1",
                                                         "r": "Patient/p1"}]


async def test_creation_order_is_kept_and_old_documents_sort_first_by_id(store):
    for n, patient in enumerate(["m", "z", "a", "q", "b"], 1):
        await store.commit([write("Patient", patient, 1)])
        assert (await store.resources.find_one({"_id": f"Patient/{patient}"}))["created"] == n  # its create's seq
    await store.commit([write("Patient", "m", 2)])
    await store.commit([write("Patient", "z", 2, body=None)])
    await store.commit([write("Patient", "z", 3)])  # created again
    assert {d["_id"]: d["created"] for d in await store.resources.find({"_id": {"$in": ["Patient/m", "Patient/z"]}})
            .to_list(None)} == {"Patient/m": 1, "Patient/z": 2}
    # a database written before documents carried `created`: those without it come first, by type and id
    await store.resources.update_many({"_id": {"$in": ["Patient/q", "Patient/z"]}}, {"$unset": {"created": ""}})
    everything = ["q", "z", "m", "a", "b"]
    page = await store.search(Query(("Patient",), count=10))
    assert [v.id for v in page.matches] == everything
    seen, query = [], Query(("Patient",), count=2)  # paging passes from the old documents to the others
    while True:
        page = await store.search(query)
        seen += [v.id for v in page.matches]
        following, preceding = places(query, page)
        if following is None:
            break
        query = Query(("Patient",), count=2, after=following)
    back = [v.id for v in (await store.search(Query(("Patient",), count=2, after=preceding))).matches]
    assert seen == everything and back == everything[2:4]


class _Recorded:
    """A collection proxy that notes every call made without the session, then drops the session
    (mongomock has none)."""

    def __init__(self, collection, session, unbound: list[str]) -> None:
        self._collection, self._session, self._unbound = collection, session, unbound

    def __getattr__(self, name: str):
        method = getattr(self._collection, name)

        def call(*args, session=None, **kwargs):
            if session is not self._session:
                self._unbound.append(name)
            return method(*args, **kwargs)
        return call


class _Session:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        return None

    async def with_transaction(self, callback, **options):
        self.options = options
        return await callback(self)


async def test_transaction_path_binds_every_operation_to_the_session():
    """The code path taken on a replica set, run on mongomock with a stand-in session (no atomicity
    here: that is the server's; this checks that every read and write of a commit is in the session)."""
    store = MongoStore(AsyncMongoMockClient(), "hearth_tx")
    await store.open()
    session, unbound = _Session(), []
    store.client = type("Client", (), {"start_session": lambda self: session})()
    for name in ("resources", "history_versions", "change_log", "counters", "locks"):
        setattr(store, name, _Recorded(getattr(store, name), session, unbound))
    store.supports_transactions = True
    entries = [StringEntry("family", "tx", "Tx")]
    changes = await store.commit([write("Patient", "t1", 1, entries=entries), write("Patient", "t2", 1)],
                                 [Assertion(by_family("tx"), frozenset())])
    assert [c.seq for c in changes] == [1, 2] and unbound == []
    assert session.options["write_concern"].document == {"w": "majority"}  # acknowledged once a majority has it
    assert await store.locks.count_documents({}, session=session) == 1
    with pytest.raises(VersionConflict) as conflict:
        await store.commit([write("Patient", "t3", 1), write("Patient", "t1", 1)])
    assert conflict.value.actual == 1
    with pytest.raises(AssertionFailed):
        await store.commit([write("Patient", "t4", 1)], [Assertion(by_family("tx"), frozenset())])
