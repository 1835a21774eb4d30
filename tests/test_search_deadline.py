"""HEARTH_SEARCH_TIMEOUT on SQLite: a search running past it is stopped (400 too-costly naming the setting) and its
reader thread serves the next one; a conditional write's assertion is bounded in the writer process too; a reader
that does not come back is reported by /readyz and does not hold up close() or the process's exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON
from hearth.search.ir import Clause, Query
from hearth.search.params import string
from hearth.server.app import create_app
from hearth.server.settings import Settings
from hearth.storage.base import Assertion, SearchTimedOut, Write
from hearth.storage.sqlite import search_preds, store as store_module
from hearth.storage.sqlite.search_preds import Cond
from hearth.storage.sqlite.store import SqliteStore

ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
ROOT = Path(__file__).resolve().parents[1]


def timed_out(error: Exception, seconds: float) -> None:
    assert isinstance(error, SearchTimedOut) and error.seconds == seconds, error


async def test_endless_statements_are_stopped_and_their_threads_serve_again(tmp_path):
    store = SqliteStore(str(tmp_path / "h.db"), readers=2, search_timeout=0.2)
    try:
        outcomes = await asyncio.gather(*(store.run_read(lambda conn: conn.execute(ENDLESS).fetchone())
                                          for _ in range(5)), return_exceptions=True)
        for outcome in outcomes:  # more endless statements than threads: each thread was freed for the next
            timed_out(outcome, 0.2)
        assert await store.run_read(lambda conn: conn.execute("SELECT 42").fetchone()[0]) == 42
        assert store.readiness_problem() is None
    finally:
        await store.close()


@pytest.fixture
def endless_text(monkeypatch):
    """`:text` compiled to a condition that never ends: a search with one runs until it is stopped."""
    monkeypatch.setitem(search_preds._LEAVES, search_preds.TokenTextPred,
                        lambda pred, col: Cond("idx_token", ((f"({ENDLESS}) > 0", ()),)))


async def test_a_search_past_the_deadline_is_a_400_and_the_readers_serve_again(tmp_path, endless_text):
    app = create_app(Settings(storage=str(tmp_path / "h.db"), base_url=BASE),
                     SqliteStore(str(tmp_path / "h.db"), search_timeout=0.5))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            for n in range(100):
                observation = {"resourceType": "Observation", "id": f"o{n}", "status": "final",
                               "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                               "valueQuantity": {"value": n, "unit": "kg"}}
                assert (await client.put(f"/Observation/o{n}", json=observation, headers=FHIR_JSON)).status_code == 201
            slow = [client.get("/Observation?code:text=x&_total=accurate") for _ in range(6)]
            for response in await asyncio.gather(*slow):  # more than the 4 reader threads
                assert response.status_code == 400, response.text
                issue = response.json()["issue"][0]
                assert issue["code"] == "too-costly" and "HEARTH_SEARCH_TIMEOUT (0.5 s)" in issue["diagnostics"]
            quick = await asyncio.gather(*(client.get("/Observation?code=29463-7&_total=accurate") for _ in range(6)))
            assert all(r.status_code == 200 and r.json()["total"] == 100 for r in quick)
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await app.shutdown()


async def test_an_assertion_in_the_writer_process_is_bounded(tmp_path):
    # the writer looks at the clock every few thousand steps of SQLite's VM: with a deadline of a nanosecond, the
    # first look stops a scan of 3,000 name entries, however fast the machine
    store = SqliteStore(str(tmp_path / "h.db"), search_timeout=1e-9)
    now = datetime.now(timezone.utc)
    try:
        from hearth.search.entries import StringEntry
        await store.commit([Write("Patient", f"p{n}", 1, now, b'{"resourceType":"Patient"}',
                                  (StringEntry("name", f"name {n}", f"Name {n}"),), 0, "create") for n in range(3000)])
        query = Query(("Patient",), (Clause("name", "string", (string.pred("zzz", "contains"),)),))
        with pytest.raises(SearchTimedOut) as refused:
            await store.commit([Write("Patient", "new", 1, now, b'{"resourceType":"Patient"}', (), 0, "create")],
                               [Assertion(query, frozenset())])
        timed_out(refused.value, 1e-9)
        assert await store.read("Patient", "new") is None
        await store.commit([Write("Patient", "new", 1, now, b'{"resourceType":"Patient"}', (), 0, "create")])
    finally:
        await store.close()


async def test_a_stuck_reader_makes_readyz_503_and_does_not_hold_up_close(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "_GRACE", 0.0)
    store = SqliteStore(str(tmp_path / "h.db"), search_timeout=0.1)
    app = create_app(Settings(storage=str(tmp_path / "h.db"), base_url=BASE), store)
    await app.startup()
    release = threading.Event()
    stuck = asyncio.ensure_future(store.run_read(lambda conn: release.wait()))  # Python work: no interrupt reaches it
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            for _ in range(600):  # until the task has run past the deadline (and the grace, made 0 here)
                response = await client.get("/readyz")
                if response.status_code != 200:
                    break
                await asyncio.sleep(0.05)
            assert response.status_code == 503
            body = response.json()
            assert body["resourceType"] == "OperationOutcome" and "HEARTH_SEARCH_TIMEOUT" in body["issue"][0]["diagnostics"]
        await asyncio.wait_for(app.shutdown(), 60)  # closes the store although a reader never comes back
    finally:
        release.set()
        await asyncio.gather(stuck, return_exceptions=True)


def test_a_stuck_reader_does_not_hold_up_the_process_exit(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, threading
        from hearth.storage.sqlite.store import SqliteStore

        async def main():
            store = SqliteStore({str(tmp_path / "h.db")!r}, search_timeout=0.1)
            asyncio.ensure_future(store.run_read(lambda conn: threading.Event().wait()))
            await asyncio.sleep(0.3)
            await store.close()

        asyncio.run(main())
        print("closed")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "closed" in done.stdout, done.stderr
