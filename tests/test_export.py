"""Bulk Data export served (system, Patient and Group level) on both backends: what is written is exactly what is
stored, per type, filtered as asked."""

from __future__ import annotations

import orjson
import pytest

from conftest import make_store
from export_helpers import (ASYNC, Running, download, export_settings, ids, kick_off, manifest,
                            put_all)


def _observation(oid: str, patient: str, code: str = "8867-4", value: str = "72.50") -> dict:
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"},
            "valueQuantity": {"value": orjson.Fragment(value.encode()), "unit": "/min"}}


SEED = [
    {"resourceType": "Patient", "id": "p1", "gender": "female", "name": [{"family": "One"}]},
    {"resourceType": "Patient", "id": "p2", "gender": "male", "name": [{"family": "Two"}]},
    {"resourceType": "Patient", "id": "p3", "gender": "female", "name": [{"family": "Three"}]},
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
    _observation("o1", "p1"), _observation("o2", "p1", "8310-5"), _observation("o3", "p2"),
    _observation("o4", "p3", "8310-5"),
    {"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
     "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p2"}, "inactive": True},
                {"entity": {"reference": "Patient/p3"}}]},
]


@pytest.fixture
async def running(backend, tmp_path):
    async with Running(export_settings(tmp_path, export_file_bytes=400), make_store(backend, tmp_path)) as server:
        await put_all(server.client, SEED)
        yield server


async def test_system_export_writes_the_stored_bytes_of_every_type(running):
    client = running.client
    status = await kick_off(client)
    assert status.startswith("http://hearth.test/fhir/_export/")
    done = await manifest(client, status)
    assert done["requiresAccessToken"] is False and done["error"] == []
    assert done["request"] == "http://hearth.test/fhir/$export" and done["transactionTime"].endswith("Z")
    lines = await download(client, done)
    assert {t: sorted(ids(found)) for t, found in lines.items()} == {
        "Patient": ["p1", "p2", "p3"], "Practitioner": ["dr"], "Observation": ["o1", "o2", "o3", "o4"],
        "Group": ["g1"]}
    for resource_type, found in lines.items():
        for line in found:
            stored = await client.get(f"/{resource_type}/{orjson.loads(line)['id']}")
            assert line == stored.content  # the stored JSON, byte for byte (72.50 stays 72.50)
    observations = [item for item in done["output"] if item["type"] == "Observation"]
    assert len(observations) > 1 and sum(item["count"] for item in observations) == 4  # split at 400 bytes


async def test_type_since_and_type_filter_choose_what_is_written(running):
    client = running.client
    done = await manifest(client, await kick_off(client, _type="Observation,Patient",
                                                 _typeFilter="Observation?code=8310-5"))
    lines = await download(client, done)
    assert sorted(ids(lines["Observation"])) == ["o2", "o4"] and sorted(ids(lines["Patient"])) == ["p1", "p2", "p3"]
    since = orjson.loads((await client.get("/Observation/o4")).content)["meta"]["lastUpdated"]
    await put_all(client, [_observation("o5", "p2")])
    later = await download(client, await manifest(client, await kick_off(client, _since=since)))
    assert {t: ids(found) for t, found in later.items()} == {"Observation": ["o5"], "Group": ["g1"]}  # after o4


async def test_patient_and_group_exports_hold_only_their_patients_data(running):
    client = running.client
    everyone = await download(client, await manifest(client, await kick_off(client, "/Patient/$export")))
    assert set(everyone) == {"Patient", "Observation", "Group"}  # a Group is in its members' compartments
    assert sorted(ids(everyone["Observation"])) == ["o1", "o2", "o3", "o4"]
    group = await download(client, await manifest(client, await kick_off(client, "/Group/g1/$export")))
    assert sorted(ids(group["Patient"])) == ["p1", "p3"]  # p2's membership is inactive
    assert sorted(ids(group["Observation"])) == ["o1", "o2", "o4"] and ids(group["Group"]) == ["g1"]
    posted = await client.post("/Patient/$export", headers={**ASYNC, "Content-Type": "application/fhir+json"},
                               json={"resourceType": "Parameters", "parameter": [
                                   {"name": "patient", "valueReference": {"reference": "Patient/p2"}},
                                   {"name": "_type", "valueString": "Observation"}]})
    assert posted.status_code == 202, posted.text
    one = await download(client, await manifest(client, posted.headers["content-location"]))
    assert {t: ids(found) for t, found in one.items()} == {"Observation": ["o3"]}
    missing = await client.get("/Group/nope/$export", headers=ASYNC)
    assert missing.status_code == 404


async def test_elements_subset_and_mark_the_lines(running):
    client = running.client
    done = await manifest(client, await kick_off(client, _type="Patient", _elements="Patient.gender"))
    [patient, *_] = [orjson.loads(line) for line in (await download(client, done))["Patient"]]
    assert set(patient) == {"resourceType", "id", "meta", "gender"}
    assert any(tag["code"] == "SUBSETTED" for tag in patient["meta"]["tag"])


async def test_delete_cancels_and_removes_the_files(running, tmp_path):
    client = running.client
    status = await kick_off(client, _type="Patient")
    await manifest(client, status)
    job = status.rsplit("/", 1)[-1]
    assert (tmp_path / "exports" / job).is_dir()
    deleted = await client.delete(status)
    assert deleted.status_code == 202
    assert (await client.get(status)).status_code == 404
    assert not (tmp_path / "exports" / job).exists()
