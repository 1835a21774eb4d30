"""An export's window (both backends): what changes after its transactionTime is left out and carried by the next
export with `_since` = that transactionTime; deletions since `_since` are listed as DELETE Bundles (`deleted`),
only those the export would have held."""

from __future__ import annotations

import orjson

from conftest import make_store
from export_helpers import ASYNC, Running, download, export_settings, ids, kick_off, manifest, put_all

PATIENTS = [{"resourceType": "Patient", "id": f"p{n}", "gender": "female"} for n in range(5)]


def _observation(oid: str, patient: str, code: str) -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final", "subject": {"reference": f"Patient/{patient}"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]}}


async def _deleted(client, done: dict) -> list[str]:
    """`Type/id` of every DELETE entry of the manifest's deletion Bundles."""
    urls = []
    for item in done["deleted"]:
        assert item["type"] == "Bundle"
        response = await client.get(item["url"])
        assert response.status_code == 200 and len(response.content.splitlines()) == item["count"]
        for line in response.content.splitlines():
            bundle = orjson.loads(line)
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
            for entry in bundle["entry"]:
                assert entry["request"]["method"] == "DELETE"
                urls.append(entry["request"]["url"])
    return sorted(urls)


async def test_changes_after_transaction_time_wait_for_the_next_export(backend, tmp_path):
    async with Running(export_settings(tmp_path), make_store(backend, tmp_path)) as server:
        client = server.client
        await put_all(client, PATIENTS)
        await server.app.exports.stop()  # the job waits while the data changes after its transactionTime
        first = await kick_off(client, _type="Patient")
        await put_all(client, [{**PATIENTS[1], "gender": "male"}, {"resourceType": "Patient", "id": "p5"}])
        assert (await client.delete("/Patient/p2")).status_code in (200, 204)
        server.app.exports.start()
        done = await manifest(client, first)
        assert sorted(ids((await download(client, done))["Patient"])) == ["p0", "p3", "p4"]
        assert "deleted" not in done  # no _since: no deletions asked for

        second = await manifest(client, await kick_off(client, _type="Patient", _since=done["transactionTime"]))
        lines = (await download(client, second))["Patient"]
        assert sorted(ids(lines)) == ["p1", "p5"] and orjson.loads(lines[ids(lines).index("p1")])["gender"] == "male"
        assert await _deleted(client, second) == ["Patient/p2"]


async def test_deleted_lists_what_the_export_would_have_held(backend, tmp_path):
    async with Running(export_settings(tmp_path), make_store(backend, tmp_path)) as server:
        client = server.client
        await put_all(client, PATIENTS[:3] + [_observation("o0", "p0", "1"), _observation("o1", "p1", "1"),
                                              _observation("o2", "p1", "2"), _observation("o3", "p2", "1")])
        await client.delete("/Observation/o3")  # before _since: not listed
        since = (await manifest(client, await kick_off(client, _type="Patient")))["transactionTime"]
        for gone in ("Observation/o0", "Observation/o1", "Observation/o2", "Patient/p0", "Patient/p2"):
            assert (await client.delete(f"/{gone}")).status_code in (200, 204)
        await put_all(client, [PATIENTS[2]])  # deleted, then created again: current, not a deletion
        await client.delete("/Patient/p0")  # deleted twice: listed once

        everything = await manifest(client, await kick_off(client, _since=since))
        assert await _deleted(client, everything) == [
            "Observation/o0", "Observation/o1", "Observation/o2", "Patient/p0"]
        assert sorted(ids((await download(client, everything))["Patient"])) == ["p2"]

        filtered = await manifest(client, await kick_off(client, _since=since, _type="Observation",
                                                         _typeFilter="Observation?code=1"))
        assert await _deleted(client, filtered) == ["Observation/o0", "Observation/o1"]

        response = await client.post("/Patient/$export", headers={**ASYNC, "Content-Type": "application/fhir+json"},
                                     content=orjson.dumps({"resourceType": "Parameters", "parameter": [
                                         {"name": "_since", "valueInstant": since},
                                         {"name": "patient", "valueReference": {"reference": "Patient/p1"}}]}))
        assert response.status_code == 202, response.text
        one_patient = await manifest(client, response.headers["content-location"])
        assert await _deleted(client, one_patient) == ["Observation/o1", "Observation/o2"]
        nobody_deleted = await manifest(client, await kick_off(client, _since=everything["transactionTime"]))
        assert nobody_deleted["deleted"] == []
