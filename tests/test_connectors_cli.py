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
        assert ids == sorted(f"ehr-p{n}" for n in range(45))
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
