"""Export jobs as durable state: kick-off errors, the running-jobs limit (429), restarts (a job pending or in
progress when its server stops completes on the next one; a dead worker's lease is taken over), expiry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from conftest import make_store, reopenable
from export_helpers import ASYNC, Running, download, export_settings, finished, ids, kick_off, manifest, put_all
from hearth.storage.mongo.export_jobs import MongoExportJobs
from hearth.storage.mongo.store import MongoStore
from hearth.storage.owners import MACHINE
from tests.server_process import free_port, kill_group, start, stop

PATIENTS = [{"resourceType": "Patient", "id": f"p{n}", "gender": "female"} for n in range(5)]


async def test_kick_off_errors_are_operation_outcomes(backend, tmp_path):
    async with Running(export_settings(tmp_path), make_store(backend, tmp_path)) as server:
        client = server.client
        cases = [({}, {}, 400), ({"Prefer": "respond-async"}, {"_outputFormat": "text/csv"}, 400),
                 ({"Prefer": "respond-async"}, {"_type": "Nope"}, 400),
                 ({"Prefer": "respond-async"}, {"_since": "yesterday"}, 400),
                 ({"Prefer": "respond-async"}, {"_type": "Patient", "_typeFilter": "Observation?code=x"}, 400),
                 ({"Prefer": "respond-async"}, {"_type": "Observation", "_typeFilter": "Observation?bogus=1"}, 400),
                 ({"Prefer": "respond-async"}, {"includeAssociatedData": "LatestProvenanceResources"}, 400),
                 ({"Prefer": "respond-async, handling=strict"}, {"organizeOutputBy": "Patient"}, 400),
                 ({"Prefer": "respond-async"}, {"_type": "Practitioner"}, 202)]  # lenient: unknown ignored
        for headers, params, expected in cases:
            print(params, flush=True)
            response = await client.get("/$export", params=params, headers=headers)
            assert response.status_code == expected, (params, response.text)
            if expected == 400:
                assert response.json()["resourceType"] == "OperationOutcome"
        assert (await client.get("/Patient/$export", params={"_type": "Practitioner"}, headers=ASYNC)).status_code \
            == 400  # not in the Patient compartment
        assert (await client.get("/Patient/p1/$export", headers=ASYNC)).status_code == 400
        assert (await client.get("/_export/0123456789abcdef")).status_code == 404
        ndjson = await client.get("/$export", params={"_outputFormat": "application/fhir+ndjson"}, headers=ASYNC)
        assert ndjson.status_code == 202


async def test_kick_offs_beyond_the_limit_get_429(backend, tmp_path):
    async with Running(export_settings(tmp_path, export_max_jobs=1), make_store(backend, tmp_path)) as server:
        await server.app.exports.stop()  # nothing runs: the first job stays accepted
        await kick_off(server.client)
        refused = await server.client.get("/$export", headers=ASYNC)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["issue"][0]["code"] == "throttled"


async def test_a_job_pending_when_the_server_stops_completes_after_a_restart(backend, tmp_path):
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path)
    async with Running(settings, store()) as first:
        await put_all(first.client, PATIENTS)
        await first.app.exports.stop()  # stopped with the job accepted, not written
        status = await kick_off(first.client, _type="Patient")
        assert (await first.client.get(status)).status_code == 202
    async with Running(settings, store()) as second:
        lines = await download(second.client, await manifest(second.client, status))
        assert sorted(ids(lines["Patient"])) == [f"p{n}" for n in range(5)]


async def test_a_job_left_in_progress_by_a_dead_worker_is_taken_over(backend, tmp_path):
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path, export_lease=0.3)
    async with Running(settings, store()) as first:
        await put_all(first.client, PATIENTS)
        await first.app.exports.stop()
        status = await kick_off(first.client, _type="Patient")
        # a worker of another process claims it, then dies: its lease is never renewed nor released
        claimed = await first.app.exports.jobs.claim("elsewhere:1:dead", 0.3, time.time())
        assert claimed is not None and claimed["state"] == "in-progress"
    async with Running(settings, store()) as second:
        assert (await second.client.get(status)).status_code == 202
        lines = await download(second.client, await manifest(second.client, status))
        assert len(lines["Patient"]) == 5


async def test_a_job_of_a_dead_process_on_this_host_is_released_at_once(backend, tmp_path):
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path, export_lease=600)  # waiting out this lease would fail the test
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    async with Running(settings, store()) as first:
        await put_all(first.client, PATIENTS)
        await first.app.exports.stop()
        status = await kick_off(first.client, _type="Patient")
        claimed = await first.app.exports.jobs.claim(f"{MACHINE}:{gone.stdout.strip()}::dead", 600, time.time())
        assert claimed is not None
        alive = await first.app.exports.jobs.claim(f"elsewhere:{gone.stdout.strip()}:x", 600, time.time())
        assert alive is None  # nothing else to claim: the dead worker's lease stands until someone judges it
    async with Running(settings, store()) as second:
        lines = await download(second.client, await manifest(second.client, status))
        assert len(lines["Patient"]) == 5


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_export_killed_with_its_server_completes_after_a_restart(tmp_path, workers):
    """A real `hearth serve` killed (SIGKILL) right after a kick-off: whether the job was waiting, being written or
    done, the restarted server answers its manifest well before the 600 s lease would have run out."""
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "id": f"k{n}"}, "request": {"method": "PUT", "url": f"Patient/k{n}"}}
        for n in range(500)]}
    server = start(db, port, export_lease="600", export_poll="0.1", workers=workers)
    try:
        assert httpx.post(base, json=bundle, headers={"Content-Type": "application/fhir+json"},
                          timeout=60).status_code == 200
        kicked = httpx.get(f"{base}/$export", params={"_type": "Patient"}, headers=ASYNC)
        assert kicked.status_code == 202
    finally:
        kill_group(server)
    server = start(db, port, export_lease="600", export_poll="0.1", workers=workers)
    try:
        deadline = time.monotonic() + 30
        while (answer := httpx.get(kicked.headers["content-location"])).status_code == 202:
            assert time.monotonic() < deadline, answer.headers
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        [output] = answer.json()["output"]
        lines = httpx.get(output["url"]).content.splitlines()
        assert len(lines) == output["count"] == 500 and len(set(ids(lines))) == 500
    finally:
        stop(server, hard=False)


class Latent:
    """A collection a network away: each call lets the other coroutines run first, as a driver's round trip does."""

    def __init__(self, collection) -> None:
        self.collection = collection

    def __getattr__(self, name: str):
        method = getattr(self.collection, name)

        async def call(*args, **kwargs):
            await asyncio.sleep(0)
            return await method(*args, **kwargs)
        return call


async def test_mongo_kick_offs_racing_on_two_processes_keep_the_limit(tmp_path):
    from mongomock_motor import AsyncMongoMockClient
    client, database = AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}"
    processes = [MongoExportJobs(MongoStore(client, database)) for _ in range(2)]
    for jobs in processes:
        await jobs.open()
        jobs.jobs = Latent(jobs.jobs)

    def job(n: int) -> dict:
        return {"id": f"j{n}", "created": n, "state": "accepted", "lease_owner": None, "lease_until": 0,
                "attempts": 0, "expires": None}
    added = await asyncio.gather(*(processes[n % 2].add(job(n), 3) for n in range(12)))
    assert added.count(True) == 3
    claimed = await processes[0].claim("me:1:x", 60, time.time())
    assert claimed is not None
    assert await processes[1].add(job(99), 3) is False
    assert await processes[0].save({**claimed, "state": "completed", "lease_owner": None}, "me:1:x")
    assert await processes[1].add(job(99), 3) is True  # a finished job gave its place up


async def test_a_job_interrupted_too_often_fails_cleanly(tmp_path):
    async with Running(export_settings(tmp_path), make_store("sqlite", tmp_path)) as server:
        await server.app.exports.stop()
        status = await kick_off(server.client, _type="Patient")
        jobs = server.app.exports.jobs
        for _ in range(3):  # three workers died holding it
            assert await jobs.claim("elsewhere:1:dead", 0, time.time()) is not None
        server.app.exports.start()
        server.app.exports.worker.wake.set()
        failed = await finished(server.client, status)
        assert failed.status_code == 500 and "interrupted" in failed.json()["issue"][0]["diagnostics"]


async def test_finished_jobs_expire_with_their_files(backend, tmp_path):
    settings = export_settings(tmp_path, export_retention=0.2)
    async with Running(settings, make_store(backend, tmp_path)) as server:
        await put_all(server.client, PATIENTS)
        status = await kick_off(server.client, _type="Patient")
        await manifest(server.client, status)
        folder = tmp_path / "exports" / status.rsplit("/", 1)[-1]
        assert any(folder.iterdir())
        for _ in range(200):
            if not folder.exists():
                break
            await asyncio.sleep(0.02)
        assert not folder.exists()
        assert (await server.client.get(status)).status_code == 404


@pytest.mark.parametrize("path", ["/$export", "/Patient/$export", "/Group/g/$export"])
async def test_capability_statement_lists_bulk_data(client, path):
    statement = (await client.get("/metadata")).json()
    assert "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data" in statement["instantiates"]
    rest = statement["rest"][0]
    definitions = {op["definition"] for op in rest.get("operation", [])}
    for resource in rest["resource"]:
        definitions |= {op["definition"] for op in resource.get("operation", [])}
    name = {"/$export": "export", "/Patient/$export": "patient-export", "/Group/g/$export": "group-export"}[path]
    assert f"http://hl7.org/fhir/uv/bulkdata/OperationDefinition/{name}" in definitions
