"""The Store contract (storage/base.py), one suite for both backends: reads, compare-and-set commits, tombstones,
history paging, the change log, assertions, index entries replaced with the current version, re-indexing.

SQLite on a temp file; MongoDB on mongomock-motor, or on a real server when HEARTH_TEST_MONGODB_URL is set.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from conftest import BACKENDS, make_store
from hearth.search.entries import DateEntry, ReferenceEntry, StringEntry, TokenEntry
from hearth.search.ir import Clause, Query
from hearth.search.params import string, token
from hearth.storage.base import Assertion, AssertionFailed, TransactionsUnsupported, VersionConflict, Write

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path):
    backend = make_store(request.param, tmp_path)
    if hasattr(backend, "open"):
        await backend.open()
    yield backend
    await backend.close()


def write(resource_type: str, resource_id: str, version: int, body: bytes | None = b"{}", entries=(),
          at: datetime = T0, interaction: str | None = None) -> Write:
    """Version `version` of a resource, based on the one before it."""
    kind = interaction or ("delete" if body is None else "create" if version == 1 else "update")
    return Write(resource_type, resource_id, version, at, body, tuple(entries), version - 1, kind)


def by_family(name: str) -> Query:
    return Query(("Patient",), (Clause("family", "string", (string.pred(name),)),))


async def test_read_vread_and_exact_bytes(store):
    body = b'{"resourceType":"Observation","id":"o1","valueQuantity":{"value":72.50}}'
    [change] = await store.commit([write("Observation", "o1", 1, body)])
    assert (change.type, change.id, change.version_id, change.interaction) == ("Observation", "o1", 1, "create")
    current = await store.read("Observation", "o1")
    assert current.body == body and current.version_id == 1 and not current.deleted
    assert current.last_updated == T0
    assert (await store.vread("Observation", "o1", 1)).body == body
    assert await store.read("Observation", "nope") is None
    assert await store.vread("Observation", "o1", 2) is None


async def test_compare_and_set(store):
    await store.commit([write("Patient", "p", 1, b'{"v":1}')])
    with pytest.raises(VersionConflict) as created_twice:
        await store.commit([write("Patient", "p", 1, b'{"v":"again"}')])
    assert (created_twice.value.expected, created_twice.value.actual) == (0, 1)
    await store.commit([write("Patient", "p", 2, b'{"v":2}')])
    with pytest.raises(VersionConflict) as stale:
        await store.commit([write("Patient", "p", 2, b'{"v":"stale"}')])
    assert (stale.value.expected, stale.value.actual) == (1, 2)
    with pytest.raises(VersionConflict) as absent:
        await store.commit([write("Patient", "ghost", 3)])
    assert absent.value.actual == 0
    assert (await store.read("Patient", "p")).body == b'{"v":2}'
    assert [c.seq for c in await store.changes(0, 10)] == [1, 2]  # failed commits left no change rows


async def test_concurrent_writers_one_wins(store):
    await store.commit([write("Patient", "race", 1)])
    results = await asyncio.gather(*(store.commit([write("Patient", "race", 2, f'{{"n":{n}}}'.encode())])
                                     for n in range(5)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, VersionConflict) for r in results if isinstance(r, Exception))


async def test_tombstone_drops_entries_and_keeps_history(store):
    await store.commit([write("Patient", "t", 1, b'{"a":1}', [StringEntry("family", "smith", "Smith")])])
    assert len((await store.search(by_family("smith"))).matches) == 1
    [change] = await store.commit([write("Patient", "t", 2, None)])
    assert change.interaction == "delete"
    tombstone = await store.read("Patient", "t")
    assert tombstone.deleted and tombstone.body == b"" and tombstone.version_id == 2
    assert (await store.vread("Patient", "t", 2)).deleted
    assert (await store.vread("Patient", "t", 1)).body == b'{"a":1}'
    assert (await store.search(by_family("smith"))).matches == []
    await store.commit([write("Patient", "t", 3, b'{"a":3}', [StringEntry("family", "jones", "Jones")])])
    assert [v.version_id for v in (await store.search(by_family("jones"))).matches] == [3]


async def test_history_newest_first_filters_and_paging(store):
    for n in range(1, 4):
        await store.commit([write("Patient", "a", n, at=T0 + timedelta(seconds=n))])
    await store.commit([write("Observation", "b", 1, at=T0 + timedelta(seconds=10))])
    await store.commit([write("Patient", "c", 1, at=T0 + timedelta(seconds=20))])
    everything = await store.history(None, None, None, None, 10, total=True)
    assert everything.total == 5 and (await store.history(None, None, None, None, 10)).total is None
    assert [(seq, v.type, v.id, v.version_id) for seq, v in everything.entries] == [
        (5, "Patient", "c", 1), (4, "Observation", "b", 1), (3, "Patient", "a", 3), (2, "Patient", "a", 2),
        (1, "Patient", "a", 1)]
    page = await store.history("Patient", None, None, None, 2, total=True)
    assert [v.id for _, v in page.entries] == ["c", "a"] and page.total == 4
    rest = await store.history("Patient", None, None, page.entries[-1][0], 2, total=True)
    assert [(v.id, v.version_id) for _, v in rest.entries] == [("a", 2), ("a", 1)] and rest.total == 4
    instance = await store.history("Patient", "a", T0 + timedelta(seconds=2), None, 10)
    assert [v.version_id for _, v in instance.entries] == [3, 2]
    at = await store.history("Patient", "a", None, None, 10, at=T0 + timedelta(seconds=2))
    assert [v.version_id for _, v in at.entries] == [2, 1]
    assert (await store.history(None, None, None, None, 0)).entries == []


async def test_changes_after_seq(store):
    await store.commit([write("Patient", "x", 1)])
    await store.commit([write("Patient", "x", 2)])
    await store.commit([write("Patient", "x", 3, None)])
    changes = await store.changes(1, 10)
    assert [(c.seq, c.version_id, c.interaction) for c in changes] == [(2, 2, "update"), (3, 3, "delete")]
    assert changes[0].last_updated == T0
    assert [c.seq for c in await store.changes(0, 2)] == [1, 2]
    assert await store.changes(3, 10) == []


async def test_several_writes_need_transactions(store):
    writes = [write("Patient", "m1", 1), write("Patient", "m2", 1)]
    if store.supports_transactions:
        changes = await store.commit(writes)
        assert [c.seq for c in changes] == [1, 2]
        return
    with pytest.raises(TransactionsUnsupported):
        await store.commit(writes)
    assert await store.read("Patient", "m1") is None and await store.changes(0, 10) == []


async def test_assertions_guard_conditional_create(store):
    nobody = Assertion(by_family("doe"), frozenset())
    entries = [StringEntry("family", "doe", "Doe")]
    await store.commit([write("Patient", "d1", 1, entries=entries)], [nobody])
    with pytest.raises(AssertionFailed) as failed:
        await store.commit([write("Patient", "d2", 1, entries=entries)], [nobody])
    assert failed.value.ids == frozenset({"d1"})
    assert await store.read("Patient", "d2") is None
    await store.commit([write("Patient", "d1", 2, entries=entries)], [Assertion(by_family("doe"), frozenset({"d1"}))])


async def test_racing_conditional_creates_create_once(store):
    nobody = Assertion(by_family("race"), frozenset())
    entries = [StringEntry("family", "race", "Race")]
    results = await asyncio.gather(*(store.commit([write("Patient", f"r{n}", 1, entries=entries)], [nobody])
                                     for n in range(4)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, AssertionFailed) for r in results if isinstance(r, Exception))
    assert len((await store.search(by_family("race"))).matches) == 1


async def test_entries_replaced_with_the_current_version(store):
    first = [TokenEntry("code", "http://loinc.org", "1"), DateEntry("date", "2020-01-01T00:00:00.000000",
                                                                    "2020-01-01T23:59:59.999999")]
    await store.commit([write("Observation", "e", 1, entries=first)])
    second = [TokenEntry("code", "http://loinc.org", "2"), ReferenceEntry("subject", "Patient", "p1")]
    await store.commit([write("Observation", "e", 2, entries=second)])
    code = lambda c: Query(("Observation",), (Clause("code", "token", (token.code(None, c),)),))  # noqa: E731
    assert (await store.search(code("1"))).matches == []
    assert [v.version_id for v in (await store.search(code("2"))).matches] == [2]


async def test_reindex_replaces_entries_without_a_version(store):
    await store.commit([write("Patient", "r", 1, entries=[StringEntry("family", "old", "Old")])])
    await store.commit([write("Patient", "gone", 1, entries=[StringEntry("family", "old", "Old")])])
    await store.commit([write("Patient", "gone", 2, None)])
    await store.commit([write("Patient", "moved", 1, entries=[StringEntry("family", "old", "Old")])])
    await store.commit([write("Patient", "moved", 2, entries=[StringEntry("family", "later", "Later")])])
    await store.reindex([("Patient", "r", 1, [StringEntry("family", "new", "New")]),
                         ("Patient", "gone", 1, [StringEntry("family", "new", "New")]),
                         ("Patient", "never", 1, [StringEntry("family", "new", "New")]),
                         ("Patient", "moved", 1, [StringEntry("family", "new", "New")])])  # from v1: v2 is current
    assert [v.id for v in (await store.search(by_family("new"))).matches] == ["r"]
    assert (await store.search(by_family("old"))).matches == []
    assert [v.id for v in (await store.search(by_family("later"))).matches] == ["moved"]  # v2's entries stand
    assert (await store.read("Patient", "r")).version_id == 1 and len(await store.changes(0, 10)) == 5
