"""A page (or an NDJSON chunk) is written together (one transaction per part where the store has transactions;
one by one where it has none), and a resource in it that Hearth refuses or that is in conflict is settled on its
own: the others are stored, exactly that one is a dead letter or decided by the policy; every write audited."""

from __future__ import annotations

from typing import Any

import pytest

from connector_helpers import FHIR_JSON, observation, patient, world  # noqa: F401 (fixture)

__all__ = ["world"]  # the fixture the tests take, imported for pytest (pyflakes ignores noqa, not this)

KINDS = {"fhir-poll": {"kind": "fhir-poll", "page_size": 50},
         "bulk-export": {"kind": "bulk-export", "rate": 1000}}


def _connector(kind: str, conflict: str = "manual") -> dict[str, Any]:
    return {**KINDS[kind], "types": ["Patient", "Observation"], "conflict": conflict}


async def _audited_writes(world, outcome: str) -> list[str]:
    """What the connector's AuditEvents of writes with this outcome name (0: written, 4: refused)."""
    found = await world.get("/AuditEvent", agent="connector/ehr", outcome=outcome, _count="1000")
    assert found.status_code == 200, found.text
    return sorted(event["resource"]["entity"][0]["what"]["reference"] for event in found.json().get("entry", [])
                  if event["resource"]["subtype"][0]["code"] in ("create", "update"))


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_one_invalid_resource_of_a_page_is_the_only_one_kept_aside(world, kind):
    world.ehr.page_size = 50
    for n in range(12):
        world.ehr.put(patient(f"p{n}", gender="robot" if n == 7 else "female"))
    for n in range(8):
        world.ehr.put(observation(f"o{n}", f"Patient/p{n}"))
    connectors = await world.connectors(ehr=_connector(kind))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    counters = status["counters"]
    assert (counters["stored"], counters["rejected"], counters["dead_lettered"]) == (19, 1, 1)
    stored = {p["id"]: p for p in await world.resources("Patient")}
    assert sorted(stored) == sorted(f"ehr.p{n}" for n in range(12) if n != 7)
    assert all(p["meta"]["versionId"] == "1" for p in stored.values())
    observations = {o["id"]: o for o in await world.resources("Observation")}
    assert len(observations) == 8 and observations["ehr.o7"]["subject"]["reference"] == "Patient/ehr.p7"
    assert observations["ehr.o3"]["meta"]["source"].endswith("/Observation/o3/_history/1")
    [letter] = await connectors.dead_letters("ehr")
    assert letter["key"] == "Patient/p7" and letter["reason"] == "invalid" and "gender" in letter["error"]
    written = await _audited_writes(world, "0")
    assert len(written) == 19 and len(set(written)) == 19  # one AuditEvent per resource written
    assert await _audited_writes(world, "4") == ["Patient/ehr.p7"]  # and the refused write's
    assert (await connectors.run_once("ehr"))["counters"]["stored"] == 19  # a pass again: nothing new written
    assert len(await connectors.dead_letters("ehr")) == 1
    assert all(p["meta"]["versionId"] == "1" for p in await world.resources("Patient"))


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_one_resource_of_a_page_changed_in_hearth_is_decided_alone(world, kind):
    world.ehr.page_size = 50
    for n in range(6):
        world.ehr.put(patient(f"p{n}", family="Original"))
    connectors = await world.connectors(ehr=_connector(kind))
    await connectors.run_once("ehr")
    local = (await world.get("/Patient/ehr.p3")).json()
    local["name"][0]["family"] = "ChangedInHearth"
    assert (await world.client.put("/Patient/ehr.p3", json=local, headers=FHIR_JSON)).status_code == 200
    for n in range(6):
        world.ehr.put(patient(f"p{n}", family="ChangedUpstream"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert (status["counters"]["stored"], status["counters"]["conflicts"]) == (11, 1)
    families = {p["id"]: (p["name"][0]["family"], p["meta"]["versionId"]) for p in await world.resources("Patient")}
    assert families == {**{f"ehr.p{n}": ("ChangedUpstream", "2") for n in range(6)},
                        "ehr.p3": ("ChangedInHearth", "2")}
    [letter] = await connectors.dead_letters("ehr")
    assert letter["key"] == "Patient/p3" and letter["reason"] == "conflict"
