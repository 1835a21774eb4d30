"""SearchParameter re-index jobs (interactions/reindex_jobs.py, reindex_worker.py) over HTTP on both backends: the
write answers before anything is indexed, the parameter is searchable once every resource is, in every process; a
job whose holder stopped is resumed from its last saved page by another process, and the former holder's late save
is refused; a changed parameter stays searchable while it is indexed again, a new code or type waits.

The apps' workers make no pass of their own here (HEARTH_FOLLOW_INTERVAL of an hour): the tests step them."""

from __future__ import annotations

import asyncio
import uuid

from conftest import FHIR_JSON, make_store, reopenable
from export_helpers import Running, export_settings
from subscription_helpers import wait_until
from test_definitions import EYE, found, job_status, put, reindexed, search_parameter
from hearth.storage.base import LeaseLost

STRICT = {"Prefer": "handling=strict"}
HAIR = "http://example.org/fhir/StructureDefinition/hair-colour"


def patient(pid: str, eyes: str, hair: str = "") -> dict:
    extensions = [{"url": EYE, "valueCode": eyes}] + ([{"url": HAIR, "valueCode": hair}] if hair else [])
    return {"resourceType": "Patient", "id": pid, "extension": extensions}


async def refused_while_indexed(client, code: str) -> None:
    """A search with `code` is refused as still being indexed: 400 under strict handling, ignored and reported in
    the Bundle's OperationOutcome under lenient handling."""
    strict = await client.get(f"/Patient?{code}=blue", headers=STRICT)
    assert strict.status_code == 400 and "being indexed" in strict.json()["issue"][0]["diagnostics"], strict.text
    lenient = (await client.get(f"/Patient?{code}=blue")).json()
    outcome, = [e["resource"] for e in lenient.get("entry", []) if e["search"]["mode"] == "outcome"]
    assert "being indexed" in outcome["issue"][0]["diagnostics"]


async def listed(client, code: str) -> bool:
    """Whether the CapabilityStatement lists `code` among Patient's search parameters."""
    statement = (await client.get("/metadata")).json()
    patient_type = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
    return code in {p["name"] for p in patient_type["searchParam"]}


async def test_the_write_answers_at_once_and_the_parameter_is_searchable_once_every_resource_is_indexed(
        backend, tmp_path):
    code = f"eye{uuid.uuid4().hex[:8]}"
    url = search_parameter(code)["url"]
    async with Running(export_settings(tmp_path, follow_interval=3600), make_store(backend, tmp_path)) as a:
        for number in range(5):
            await put(a.client, patient(f"p{number}", "blue" if number % 2 else "brown"))
        created = await a.client.post("/SearchParameter", json=search_parameter(code), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        await refused_while_indexed(a.client, code)
        assert not await listed(a.client, code)
        job, = await job_status(a.client, url)
        assert job["state"] == "pending" and job["waiting"] == ["Patient"] and job["done"] == 0
        await put(a.client, patient("during", "blue"))  # written before the job runs: indexed as it is written

        job = await reindexed(a.app, a.client, url)
        assert job["done"] == job["total"] == 6 and "waiting" not in job and job["ended"] >= job["started"]
        assert [(t["name"], t["done"], t["finished"]) for t in job["type"]] == [("Patient", 6, True)]
        assert found((await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == {"p1", "p3", "during"}
        assert await listed(a.client, code)

        assert (await a.client.delete(f"/SearchParameter/{created.json()['id']}")).status_code == 204
        gone = await a.client.get(f"/Patient?{code}=blue", headers=STRICT)  # dropped at once, no job
        assert gone.status_code == 400 and "unknown search parameter" in gone.text
        assert [job["state"] for job in await job_status(a.client, url)] == ["done"]


async def test_a_job_whose_holder_stopped_is_resumed_by_another_process_and_the_late_save_is_refused(
        backend, tmp_path, caplog):
    """Two processes; pages of 2. The first stops (paused in its second page, its lease running out); the second
    takes the job over from the first page's saved position and ends it; the first wakes and saves: refused."""
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path, follow_interval=3600, reindex_page=2, reindex_lease=3.0)
    code = f"eye{uuid.uuid4().hex[:8]}"
    url = search_parameter(code)["url"]
    async with Running(settings, store()) as a, Running(settings, store()) as b:
        for number in range(7):
            await put(a.client, patient(f"p{number}", "blue"))
        created = await b.client.post("/SearchParameter", json=search_parameter(code), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        await a.app.follower.step()  # a knows the parameter; its job waits
        await refused_while_indexed(a.client, code)

        pages: list[list[str]] = []
        wake = asyncio.Event()
        reindex_a = a.app.ctx.store.reindex

        async def paused_in_second_page(items):
            pages.append([item[1] for item in items])
            if len(pages) > 1:
                await wake.wait()  # a stops here, as a process stopped by the OS would
            await reindex_a(items)
        a.app.ctx.store.reindex = paused_in_second_page
        saves: list[str] = []
        put_a = a.app.reindexer.jobs.put

        async def put_noted(*args, **options):
            try:
                await put_a(*args, **options)
            except LeaseLost:
                saves.append("refused")
                raise
            saves.append("saved")
        a.app.reindexer.jobs.put = put_noted

        stopped = asyncio.create_task(a.app.reindexer.step())
        await wait_until(lambda: len(pages) == 2, "a to reach its second page")
        job, = await job_status(b.client, url)
        assert job["state"] == "running" and job["done"] == 2  # the first page is saved
        await put(b.client, patient("during", "blue"))  # written while the job is held
        await refused_while_indexed(b.client, code)

        indexed_by_b: list[str] = []
        reindex_b = b.app.ctx.store.reindex

        async def noted(items):
            indexed_by_b.extend(item[1] for item in items)
            await reindex_b(items)
        b.app.ctx.store.reindex = noted
        job = await reindexed(b.app, b.client, url)  # once a's lease has run out
        every = {f"p{number}" for number in range(7)} | {"during"}
        assert set(indexed_by_b) == every - set(pages[0])  # resumed after a's saved page, not from the start
        assert job["done"] == 8 and job["total"] == 7  # (the total was counted before "during" was written)

        saved = len(saves)
        wake.set()
        await stopped  # a wakes and saves its second page: refused under its lost lease
        assert saves[saved:] == ["refused"] and "lease lost" in caplog.text
        assert (await job_status(b.client, url))[-1] == job  # the progress is not set back

        await a.app.reindexer.step()  # a learns the job is done
        for client in (a.client, b.client):
            assert found((await client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == every


async def test_a_changed_parameter_stays_searchable_while_indexed_again_and_a_new_type_waits(backend, tmp_path):
    code = f"colour{uuid.uuid4().hex[:8]}"
    url = search_parameter(code)["url"]

    def version(expression: str, kind: str = "token") -> dict:
        return {**search_parameter(code, expression), "id": "colour", "type": kind}

    async with Running(export_settings(tmp_path, follow_interval=3600), make_store(backend, tmp_path)) as a:
        await put(a.client, patient("p1", "blue", hair="brown"))
        await put(a.client, version(f"Patient.extension('{EYE}').value"))
        await reindexed(a.app, a.client, url)

        await put(a.client, version(f"Patient.extension('{HAIR}').value"))  # same code and type: still searchable
        assert found((await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == {"p1"}  # as it was
        assert [job["state"] for job in await job_status(a.client, url)] == ["done", "pending"]
        await reindexed(a.app, a.client, url)
        assert found((await a.client.get(f"/Patient?{code}=brown", headers=STRICT)).json()) == {"p1"}
        assert found((await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == set()

        await put(a.client, version(f"Patient.extension('{HAIR}').value", "string"))  # another type: a new meaning
        await put(a.client, version(f"Patient.extension('{EYE}').value", "string"))  # changed again before indexed
        await refused_while_indexed(a.client, code)
        await reindexed(a.app, a.client, url)
        assert [job["state"] for job in await job_status(a.client, url)] == ["done", "done", "superseded", "done"]
        assert found((await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == {"p1"}
