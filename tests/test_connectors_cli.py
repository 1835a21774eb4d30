"""`hearth connector` as an operator runs it, in processes of its own: status, a bad connectors file, a pass
killed mid-page (SIGKILL) and run again: nothing missing, nothing duplicated. SQLite only: a second process
cannot reach the tests' in-memory MongoDB."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import httpx

from conftest import BASE
from connector_helpers import patient, toml
from fake_ehr import FakeEhr
from hearth.server.app import create_app
from hearth.server.settings import Settings


async def _hearth(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "hearth.server.cli", "connector", *args,
                                                env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)


async def _output(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_a_pass_killed_mid_page_loses_and_duplicates_nothing(tmp_path):
    ehr = FakeEhr(page_size=10)
    await ehr.start()
    try:
        for n in range(45):
            ehr.put(patient(f"p{n}"), last_updated=f"2026-01-01T00:00:{n:02d}.000000Z")
        (tmp_path / "c.toml").write_text(toml({"ehr": {"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base,
                                                      "page_size": 10}}))
        env = {"HEARTH_STORAGE": str(tmp_path / "hearth.db"), "HEARTH_CONNECTORS": str(tmp_path / "c.toml"),
               "HEARTH_BASE_URL": BASE}
        code, out, _ = await _output(await _hearth("status", env=env))
        assert code == 0 and json.loads(out)[0]["state"] == "stopped"

        running = await _hearth("run", "ehr", "--once", env=env)
        ehr.on_page = lambda page: os.kill(running.pid, signal.SIGKILL) if page == 3 else None
        code, _, _ = await _output(running)
        assert code == -signal.SIGKILL
        ehr.on_page = None
        code, out, err = await _output(await _hearth("run", "ehr", "--once", env=env))
        assert code == 0, err
        status = json.loads(out)
        assert status["state"] == "ok" and status["counters"]["fetched"] < 45  # resumed: not from the start
    finally:
        await ehr.stop()
    app = create_app(Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            found = (await client.get("/Patient", params={"_count": "100"})).json()
        ids = sorted(entry["resource"]["id"] for entry in found["entry"])
        assert ids == sorted(f"ehr.p{n}" for n in range(45))
        assert {entry["resource"]["meta"]["versionId"] for entry in found["entry"]} == {"1"}
    finally:
        await app.shutdown()


async def test_a_bad_connectors_file_is_refused_naming_the_problem(tmp_path):
    (tmp_path / "c.toml").write_text('[connectors.ehr]\nkind = "fhir-poll"\nbase = "ftp://x"\ntypes = ["Patient"]\n')
    env = {"HEARTH_STORAGE": str(tmp_path / "hearth.db"), "HEARTH_CONNECTORS": str(tmp_path / "c.toml")}
    code, _, err = await _output(await _hearth("status", env=env))
    assert code == 2 and "connector 'ehr'" in err and "base" in err
    (tmp_path / "c.toml").write_text('[connectors.ehr]\nkind = "fhir-poll"\nbase = "http://x"\ntypes = ["Bogus"]\n')
    code, _, err = await _output(await _hearth("status", env=env))
    assert code == 2 and "Bogus" in err
    (tmp_path / "c.toml").write_text('[connectors.ehr]\nkind = "fhir-poll"\nbase = "http://x"\ntypes = ["Patient"]\n')
    code, _, err = await _output(await _hearth("run", "nope", env=env))
    assert code == 2 and "no connector named 'nope'" in err


async def test_hearth_serve_runs_the_declared_connectors_and_reports_them(tmp_path):
    from server_process import free_port, start, stop
    ehr = FakeEhr()
    await ehr.start()
    try:
        ehr.put(patient("p1"))
        (tmp_path / "c.toml").write_text(toml({"ehr": {"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base,
                                                      "every": "1s"}}))
        (tmp_path / "bad.toml").write_text('[connectors.ehr]\nkind = "poll"\n')
        failed = await asyncio.create_subprocess_exec(sys.executable, "-m", "hearth.server.cli", "serve",
                                                      "--connectors", str(tmp_path / "bad.toml"),
                                                      stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        code, _, err = await _output(failed)
        assert code == 2 and "'kind' is one of" in err
        port = free_port()
        server = await asyncio.to_thread(start, tmp_path / "hearth.db", port, connectors=str(tmp_path / "c.toml"))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):  # the first pass runs at start-up; then every second
                    if (await client.get("/Patient/ehr.p1")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await client.get("/Patient/ehr.p1")).status_code == 200
                ehr.put(patient("p2"))
                for _ in range(100):
                    if (await client.get("/Patient/ehr.p2")).status_code == 200:
                        break
                    await asyncio.sleep(0.1)
                assert (await client.get("/Patient/ehr.p2")).status_code == 200
                metrics = (await client.get("/metrics")).text
                assert 'hearth_connector_resources_total{connector="ehr",outcome="stored"} 2' in metrics
                assert 'hearth_connector_circuit_open{connector="ehr",state="closed"} 0' in metrics
        finally:
            await asyncio.to_thread(stop, server, False)
        env = {"HEARTH_STORAGE": str(tmp_path / "hearth.db"), "HEARTH_CONNECTORS": str(tmp_path / "c.toml")}
        code, out, _ = await _output(await _hearth("status", "ehr", env=env))
        assert code == 0 and json.loads(out)[0]["state"] == "stopped"  # the server stopped it as it stopped
        assert json.loads(out)[0]["counters"]["stored"] == 2
    finally:
        await ehr.stop()


async def test_dead_letters_from_the_command_line(tmp_path):
    ehr = FakeEhr()
    await ehr.start()
    try:
        ehr.put(patient("bad", gender="robot"))
        (tmp_path / "c.toml").write_text(toml({"ehr": {"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base}}))
        env = {"HEARTH_STORAGE": str(tmp_path / "hearth.db"), "HEARTH_CONNECTORS": str(tmp_path / "c.toml")}
        code, out, _ = await _output(await _hearth("run", "ehr", "--once", env=env))
        assert code == 0 and json.loads(out)["counters"]["dead_lettered"] == 1
        code, out, _ = await _output(await _hearth("dead-letters", "ehr", env=env))
        [letter] = json.loads(out)
        assert letter["reason"] == "invalid" and letter["url"] == f"{ehr.base}/Patient/bad/_history/1"
        code, out, _ = await _output(await _hearth("dead-letters", "ehr", "--show", letter["id"], env=env))
        assert json.loads(json.loads(out)["raw"])["gender"] == "robot"
        ehr.put(patient("bad", gender="male"))
        code, out, _ = await _output(await _hearth("dead-letters", "ehr", "--all", env=env))
        assert json.loads(out) == [{"id": letter["id"], "result": "stored"}]
        code, out, _ = await _output(await _hearth("dead-letters", "ehr", env=env))
        assert json.loads(out) == []
    finally:
        await ehr.stop()


async def test_a_bulk_export_killed_mid_file_resumes_after_its_last_stored_chunk(tmp_path):
    import sqlite3
    ehr = FakeEhr()
    ehr.export_file_lines = 5000
    ehr.export_polls = 0
    await ehr.start()
    try:
        for n in range(1500):  # one file of 1,500 lines: three chunks of 500
            ehr.put(patient(f"p{n}"))
        (tmp_path / "c.toml").write_text(toml({"ehr": {"kind": "bulk-export", "types": ["Patient"], "base": ehr.base,
                                                      "rate": 1000}}))
        db = tmp_path / "hearth.db"
        env = {"HEARTH_STORAGE": str(db), "HEARTH_CONNECTORS": str(tmp_path / "c.toml"), "HEARTH_BASE_URL": BASE}
        running = await _hearth("run", "ehr", "--once", env=env)

        def lines_done() -> int:
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    row = conn.execute("SELECT document FROM connector_records WHERE kind = 'checkpoint'").fetchone()
            except sqlite3.Error:
                return 0
            return json.loads(row[0]).get("export", {}).get("lines", 0) if row else 0
        for _ in range(600):
            if lines_done() >= 500:
                break
            await asyncio.sleep(0.05)
        os.kill(running.pid, signal.SIGKILL)
        code, _, _ = await _output(running)
        stored_before = lines_done()
        assert code == -signal.SIGKILL and 500 <= stored_before < 1500  # killed in the middle of the file
        code, out, err = await _output(await _hearth("run", "ehr", "--once", env=env))
        assert code == 0, err
        assert json.loads(out)["counters"]["fetched"] == 1500 - stored_before  # resumed after the stored lines
        kick_offs = [r for r in ehr.requests if r.path.endswith("$export")]
        assert len(kick_offs) == 1  # the same job resumed
    finally:
        await ehr.stop()
    app = create_app(Settings(storage=str(db), base_url=BASE))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            found = (await client.get("/Patient", params={"_summary": "count"})).json()
            assert found["total"] == 1500
            versions = (await client.get("/Patient/ehr.p0/_history")).json()
            assert versions["total"] == 1
    finally:
        await app.shutdown()
