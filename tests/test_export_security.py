"""Bulk export with authorization on: the caller's scopes choose and refuse types, restricted scopes and masks hold
in the files, status and files need the token that started the export, and kick-offs and downloads are audited."""

from __future__ import annotations

import orjson

from export_helpers import download, finished, ids, kick_off, manifest
from security_helpers import secured  # noqa: F401 (fixture)
from test_security_audit import audit_events


async def test_types_outside_the_scopes_are_refused_or_left_out(secured):
    client = secured.client
    no_observations = await secured.token("system/Patient.rs system/Practitioner.rs", name="bulk-narrow")
    refused = await client.get("/$export", params={"_type": "Observation"},
                               headers={"Prefer": "respond-async", **no_observations})
    assert refused.status_code == 403
    refused_patient_level = await client.get("/Patient/$export", params={"_type": "Patient,Observation"},
                                             headers={"Prefer": "respond-async", **no_observations})
    assert refused_patient_level.status_code == 403
    status = await kick_off(client, "/Patient/$export", headers=no_observations)
    lines = await download(client, await manifest(client, status, no_observations), no_observations)
    assert set(lines) == {"Patient"}  # _type omitted: only the types the token reads (no Observation)
    assert sorted(ids(lines["Patient"])) == ["p1", "p2"]


async def test_restricted_scopes_and_masks_hold_in_the_files(secured):
    client = secured.client
    lab = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    lab_only = await secured.token(f"system/Observation.rs?category={lab} system/Patient.rs", name="bulk-lab")
    done = await manifest(client, await kick_off(client, headers=lab_only, _type="Observation"), lab_only)
    assert sorted(ids((await download(client, done, lab_only))["Observation"])) == ["o1-lab", "o2-lab"]
    masked = await secured.token("system/*.rs", mask=("Patient.name",), name="bulk-masked")
    done = await manifest(client, await kick_off(client, headers=masked, _type="Patient"), masked)
    patients = [orjson.loads(line) for line in (await download(client, done, masked))["Patient"]]
    assert len(patients) == 2 and all("name" not in patient for patient in patients)


async def test_status_and_files_need_the_token_that_started_the_export(secured):
    client = secured.client
    owner = await secured.token("system/*.rs", name="bulk-owner")
    other = await secured.token("system/*.rs", name="bulk-other")
    status = await kick_off(client, headers=owner, _type="Patient")
    assert (await client.get(status)).status_code == 401
    assert (await client.get(status, headers=other)).status_code == 404
    done = await manifest(client, status, owner)
    assert done["requiresAccessToken"] is True
    url = done["output"][0]["url"]
    assert (await client.get(url)).status_code == 401
    assert (await client.get(url, headers=other)).status_code == 404
    assert (await client.get(url, headers=owner)).status_code == 200
    assert (await client.delete(status, headers=other)).status_code == 404
    assert (await finished(client, status, owner)).status_code == 200
    events = await audit_events(secured, agent="bulk-owner")
    kinds = [event["subtype"][0]["code"] for event in events]
    assert kinds.count("operation") >= 2  # the kick-off and the download
