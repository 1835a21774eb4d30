"""AuditEvents: every access through the API is recorded (reads, searches with every resource they returned and
the patients those belong to, writes with the write, refusals), readable by auditors and admins only, never
writable."""

from __future__ import annotations

import base64

import pytest

from security_helpers import FHIR_JSON, observation, secured  # noqa: F401 (fixture)


async def audit_events(secured, **params) -> list[dict]:
    auditor = await secured.token("user/AuditEvent.rs", role="auditor", name="audit-reader")
    found = await secured.client.get("/AuditEvent", params={"_count": "100", **params}, headers=auditor)
    assert found.status_code == 200, found.text
    return [e["resource"] for e in found.json().get("entry", [])]


def entities(event: dict) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if "what" in e}


async def test_reads_and_searches_name_what_they_returned_and_whose_it_is(secured):
    client = secured.client
    app_token = await secured.token("patient/Observation.rs patient/Patient.rs", patient="p1", name="phr")
    assert (await client.get("/Patient/p1", headers=app_token)).status_code == 200
    [read] = await audit_events(secured, entity="Patient/p1", agent="phr")
    assert read["subtype"][0]["code"] == "read" and read["action"] == "R" and read["outcome"] == "0"
    assert "Patient/p1/_history/1" in entities(read) and "Patient/p1" in entities(read)
    assert read["agent"][0]["who"]["identifier"]["value"] == "phr"
    searched = await client.get("/Observation", params={"code": "8867-4"}, headers=app_token)
    assert searched.status_code == 200
    [search] = [e for e in await audit_events(secured, agent="phr") if e["subtype"][0]["code"] == "search-type"]
    assert {"Observation/o1-lab/_history/1", "Patient/p1"} <= entities(search)
    assert "Observation/o2-lab/_history/1" not in entities(search)  # only what the caller was shown
    [query] = [e for e in search["entity"] if e.get("role", {}).get("code") == "24"]
    assert base64.b64decode(query["query"]).decode() == "code=8867-4"
    by_patient = await audit_events(secured, patient="p1", agent="phr")
    assert {e["id"] for e in by_patient} >= {read["id"], search["id"]}
    assert not await audit_events(secured, patient="p2", agent="phr")


async def test_writes_are_recorded_with_the_write_and_refusals_too(secured):
    client = secured.client
    writer = await secured.token("patient/Observation.cruds", patient="p1", name="writer")
    created = await client.post("/Observation", json=observation("x", "p1", "laboratory"),
                                headers={**FHIR_JSON, **writer})
    assert created.status_code == 201
    new_id = created.json()["id"]
    [write] = await audit_events(secured, entity=f"Observation/{new_id}")
    assert write["action"] == "C" and write["outcome"] == "0" and "Patient/p1" in entities(write)
    refused = await client.post("/Observation", json=observation("y", "p2", "laboratory"),
                                headers={**FHIR_JSON, **writer})
    assert refused.status_code == 403
    hidden = await client.get("/Observation/o2-lab", headers=writer)
    assert hidden.status_code == 404
    failures = await audit_events(secured, agent="writer", outcome="4")
    assert {e["subtype"][0]["code"] for e in failures} >= {"create", "read"}
    assert any("Observation/o2-lab" in entities(e) for e in failures)
    # a failed transaction: no record of its writes (they did not happen), one of the refusal
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "Observation/t1"}, "resource": observation("t1", "p1", "laboratory")},
        {"request": {"method": "PUT", "url": "Observation/t2"}, "resource": observation("t2", "p2", "laboratory")}]}
    assert (await client.post("/", json=transaction, headers={**FHIR_JSON, **writer})).status_code == 403
    assert not [e for e in await audit_events(secured, entity="Observation/t1") if e["outcome"] == "0"]
    anonymous = await client.get("/Patient/p1")
    assert anonymous.status_code == 401
    assert [e for e in await audit_events(secured, agent="anonymous") if e["outcome"] == "4"]


async def test_only_auditors_and_admins_read_audit_events_and_nobody_writes_them(secured):
    client = secured.client
    clinician = await secured.token("user/*.rs", role="clinician", name="clinic")
    assert (await client.get("/Patient/p1", headers=clinician)).status_code == 200
    assert (await client.get("/AuditEvent", headers=clinician)).status_code == 403
    system = await secured.token("system/*.cruds", name="seeder")
    assert (await client.get("/AuditEvent", headers=system)).status_code == 403
    event = (await audit_events(secured, agent="clinic"))[0]
    auditor = await secured.token("user/AuditEvent.rs", role="auditor", name="audit-reader")
    one = await client.get(f"/AuditEvent/{event['id']}", headers=auditor)
    assert one.status_code == 200 and one.json()["id"] == event["id"]
    admin = await secured.token("user/*.cruds", role="admin", name="root")
    assert (await client.delete(f"/AuditEvent/{event['id']}", headers=admin)).status_code == 405
    assert (await client.put(f"/AuditEvent/{event['id']}", json=event, headers={**FHIR_JSON, **admin})
            ).status_code == 405
    assert (await client.get(f"/AuditEvent/{event['id']}", headers=admin)).status_code == 200


async def test_audit_search_by_date_and_paging(secured):
    client = secured.client
    reader = await secured.token("system/*.rs", name="pager")
    for _ in range(3):
        assert (await client.get("/Patient/p2", headers=reader)).status_code == 200
    auditor = await secured.token("user/AuditEvent.rs", role="auditor", name="audit-reader")
    first = (await client.get("/AuditEvent", params={"agent": "pager", "_count": "2"}, headers=auditor)).json()
    assert len(first["entry"]) == 2
    following = next(link["url"] for link in first["link"] if link["relation"] == "next")
    second = (await client.get(following.removeprefix(str(client.base_url)), headers=auditor)).json()
    ids = [e["resource"]["id"] for e in first["entry"] + second["entry"]]
    assert len(ids) == len(set(ids)) == 3
    recorded = first["entry"][0]["resource"]["recorded"]
    assert len(await audit_events(secured, agent="pager", date=f"ge{recorded[:10]}")) == 3
    assert not await audit_events(secured, agent="pager", date="lt2000-01-01")


async def test_retention_removes_old_records_only(secured):
    from hearth.security.audit import purge_older
    reader = await secured.token("system/*.rs", name="old-reader")
    assert (await secured.client.get("/Patient/p1", headers=reader)).status_code == 200
    log = secured.app.ctx.audit.log
    assert await purge_older(log, days=1) == 0  # nothing is a day old
    assert await audit_events(secured, agent="old-reader")
    assert await purge_older(log, days=0) > 0  # everything made before now
    assert not await audit_events(secured, agent="old-reader")


@pytest.mark.parametrize("backend", ["sqlite"])  # a file lock: MongoDB has none to be busy on
async def test_a_read_waits_for_a_busy_sqlite_audit_log_and_is_recorded(secured):
    """The SQLite log appends on the event loop; a database someone else is writing sends the batch to the log's
    thread, which waits its turn: the read is answered once recorded, never unrecorded."""
    import asyncio
    import sqlite3
    log = secured.app.ctx.audit.log
    holder = sqlite3.connect(log.path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    reader = await secured.token("system/*.rs", name="patient-reader")
    read = asyncio.ensure_future(secured.client.get("/Patient/p1", headers=reader))
    await asyncio.sleep(0.3)
    assert not read.done()  # not answered while its record cannot be written
    holder.execute("COMMIT")
    holder.close()
    assert (await read).status_code == 200
    assert len(await audit_events(secured, agent="patient-reader", entity="Patient/p1")) == 1
