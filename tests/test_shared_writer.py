"""The shared SQLite writer of `hearth serve --workers N` (storage/sqlite/writer.py's SharedWriter): several server
processes' connections commit in one writer process, each gets its own outcomes, and a writer that ends fails the
writes sent to it (503) while its successor takes the next ones."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hearth.interactions.refusals import refusal
from hearth.storage.base import VersionConflict, Write
from hearth.storage.sqlite.store import SqliteStore, prepare
from hearth.storage.sqlite.writer import SharedWriter, WriterUnavailable

_SLOW = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) "
         "SELECT count(*) FROM c")  # runs for minutes in the writer process: a job in flight when it is killed


def _create(resource_id: str) -> Write:
    body = b'{"resourceType":"Basic","id":"%s"}' % resource_id.encode()
    return Write("Basic", resource_id, 1, datetime.now(timezone.utc), body, (), 0, "create")


@pytest.fixture
def shared(tmp_path: Path):
    path = str(tmp_path / "hearth.db")
    prepare(path, "NORMAL")
    writer = SharedWriter(path, "NORMAL")
    yield path, writer
    writer.stop()


async def test_two_connections_commit_concurrently_in_one_writer(shared):
    path, writer = shared
    stores = [SqliteStore(path, writer=writer.address) for _ in range(2)]
    try:
        commits = [store.commit([_create(f"{n}-{i}")]) for i in range(50) for n, store in enumerate(stores)]
        # and both race for one id: exactly one of them creates it
        commits += [store.commit([_create("contested")]) for store in stores]
        outcomes = await asyncio.gather(*commits, return_exceptions=True)
        conflicts = [outcome for outcome in outcomes if isinstance(outcome, VersionConflict)]
        changes = [change for outcome in outcomes if isinstance(outcome, list) for change in outcome]
        assert len(conflicts) == 1 and len(changes) == 101
        assert sorted(change.seq for change in changes) == list(range(1, 102))  # each numbered once, no gap
        for store in stores:  # each reads what either wrote
            assert (await store.read("Basic", "0-49")) is not None and (await store.read("Basic", "1-0")) is not None
        assert writer.process.poll() is None  # one writer process for both (neither started its own)
        assert all(store._writer.process is None for store in stores)
    finally:
        for store in stores:
            await store.close()
    assert writer.process.poll() is None  # a server process closing ends its connection, not the shared writer


async def test_a_killed_shared_writer_fails_its_jobs_and_its_successor_takes_the_next(shared):
    path, writer = shared
    store = SqliteStore(path, writer=writer.address)
    try:
        await store.commit([_create("before")])
        in_flight = asyncio.ensure_future(store.run_write(sqlite3.Connection.execute, _SLOW))
        await asyncio.sleep(0.2)
        os.kill(writer.process.pid, signal.SIGKILL)
        with pytest.raises(WriterUnavailable) as failed:
            await in_flight
        assert refusal(failed.value).status == 503
        writer.process.wait()
        writer.restart()  # what the supervisor does (server/workers.py)
        await store.commit([_create("after")])
        assert await store.read("Basic", "before") is not None and await store.read("Basic", "after") is not None
    finally:
        await store.close()
