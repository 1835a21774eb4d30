"""Export jobs as durable state: kick-off errors, the running-jobs limit (429), restarts (a job pending or in
progress when its server stops completes on the next one; a dead worker's lease is taken over), expiry."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from conftest import make_store
from export_helpers import ASYNC, Running, download, export_settings, finished, ids, kick_off, manifest, put_all
from hearth.storage.mongo.store import MongoStore
from hearth.storage.sqlite.store import SqliteStore

PATIENTS = [{"resourceType": "Patient", "id": f"p{n}", "gender": "female"} for n in range(5)]


def reopenable(backend: str, tmp_path):
    """A function making a new store on the same database each call (mongomock: the same client)."""
    if backend == "sqlite":
        return lambda: SqliteStore(str(tmp_path / "hearth.db"))
    from mongomock_motor import AsyncMongoMockClient
    client, database = AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}"
    return lambda: MongoStore(client, database)


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
