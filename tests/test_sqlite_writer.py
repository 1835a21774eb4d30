"""The SQLite writer process (storage/sqlite/writer.py): writes survive it being killed, and a new one takes over."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON
from hearth.server.app import create_app
from hearth.server.settings import Settings
from hearth.storage.sqlite.notification_queue import _create_tables, _secret
from hearth.storage.sqlite.store import SqliteStore


@pytest.fixture
async def sqlite_app(tmp_path: Path):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE)
    application = create_app(settings, SqliteStore(str(tmp_path / "hearth.db")))
    await application.startup()
    yield application
    await application.shutdown()


async def _ended(store: SqliteStore) -> None:
    """Wait until the server side has seen its writer process end."""
    for _ in range(500):
        if store._writer.reading is not None and store._writer.reading.done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the writer process did not end")


async def test_a_killed_writer_process_is_replaced_and_loses_nothing_committed(sqlite_app):
    store = sqlite_app.ctx.store
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sqlite_app), base_url=BASE) as client:
        first = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        assert first.status_code == 201
        killed = store._writer.process.pid
        os.kill(killed, signal.SIGKILL)
        await _ended(store)

        second = await client.post("/Patient", json={"resourceType": "Patient", "gender": "female"},
                                   headers=FHIR_JSON)
        assert second.status_code == 201
        assert store._writer.process.pid != killed
        found = await client.get("/Patient", params={"_summary": "count"})
        assert found.json()["total"] == 2
        assert (await client.get(first.headers["Location"])).status_code == 200


def _from_a_module_the_writer_cannot_import(conn: sqlite3.Connection) -> int:
    return 1


async def test_a_job_that_cannot_be_sent_or_run_fails_alone(tmp_path: Path):
    store = SqliteStore(str(tmp_path / "hearth.db"))
    try:
        await store.run_write(_create_tables)
        with pytest.raises(Exception):
            await store.run_write(lambda conn: 1)  # a lambda does not pickle
        # a function of this test module: pickled by name, but the writer process cannot import it
        results = await asyncio.gather(store.run_write(_from_a_module_the_writer_cannot_import),
                                       store.run_write(_secret), return_exceptions=True)
        assert isinstance(results[0], ModuleNotFoundError)
        assert isinstance(results[1], bytes) and len(results[1]) == 32
        assert await store.run_write(_secret) == results[1]
    finally:
        await store.close()


async def test_close_ends_the_writer_process(tmp_path: Path):
    store = SqliteStore(str(tmp_path / "hearth.db"))
    process = store._writer.process
    await store.run_write(_create_tables)
    await store.close()
    assert process.poll() == 0
