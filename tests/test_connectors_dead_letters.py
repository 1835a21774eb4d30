"""What a connector cannot store waits for a person: invalid resources (with the raw upstream JSON, the error and
the upstream URL), conflicts under each policy, retried or discarded from the CLI's and HTTP's same actions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connector_helpers import FHIR_JSON, observation, patient, toml, world  # noqa: F401 (fixture)
from fake_ehr import FakeEhr
from hearth.capability import fhir_json
from hearth.server.wiring import open_connectors
from security_helpers import secured  # noqa: F401 (fixture)


async def test_an_invalid_resource_is_not_stored_but_kept_to_fix_upstream_and_retry(world):
    ehr = world.ehr
    ehr.put(patient("good"))
    ehr.put(patient("bad", gender="robot"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok" and status["counters"]["rejected"] == 1
    assert (await world.get("/Patient/ehr.bad")).status_code == 404
    assert (await world.get("/Patient/ehr.good")).status_code == 200
    [letter] = await connectors.dead_letters("ehr")
    assert letter["reason"] == "invalid" and "gender" in letter["error"]
    assert letter["url"] == f"{ehr.base}/Patient/bad/_history/1"
    assert fhir_json.loads(letter["raw"])["gender"] == "robot"
    await connectors.run_once("ehr")  # seen again unchanged: still one dead letter, not two
    assert len(await connectors.dead_letters("ehr")) == 1
    assert (await connectors.retry("ehr", letter["id"]))[0]["result"].startswith("failed again")
    ehr.put(patient("bad", gender="female"))  # fixed upstream
    assert (await connectors.retry("ehr", letter["id"])) == [{"id": letter["id"], "result": "stored"}]
    assert (await world.get("/Patient/ehr.bad")).json()["gender"] == "female"
    assert await connectors.dead_letters("ehr") == []


async def _changed_on_both_sides(world, policy: str):
    ehr = world.ehr
    ehr.put(patient("p1", family="Original"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "conflict": policy})
    await connectors.run_once("ehr")
    local = (await world.get("/Patient/ehr.p1")).json()
    local["name"][0]["family"] = "ChangedInHearth"
    assert (await world.client.put("/Patient/ehr.p1", json=local, headers=FHIR_JSON)).status_code == 200
    return connectors


@pytest.mark.parametrize("policy,upstream_newer,kept", [
    ("upstream-wins", False, "ChangedUpstream"), ("local-wins", True, "ChangedInHearth"),
    ("newest-wins", True, "ChangedUpstream"), ("newest-wins", False, "ChangedInHearth")])
async def test_a_conflict_is_decided_by_the_connectors_policy(world, policy, upstream_newer, kept):
    connectors = await _changed_on_both_sides(world, policy)
    when = "2999-01-01T00:00:00.000000Z" if upstream_newer else "2000-01-02T00:00:00.000000Z"
    world.ehr.put(patient("p1", family="ChangedUpstream"), last_updated=when)
    if not upstream_newer:  # an older upstream change is still new to the connector: poll from before it
        await connectors.get("ehr").state.save_checkpoint({"types": {"Patient": "2000-01-01T00:00:00Z"}})
    status = await connectors.run_once("ehr")
    assert status["counters"]["conflicts"] == 1
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == kept
    world.ehr.put(patient("p1", family="Later"), last_updated="2999-06-01T00:00:00.000000Z")
    await connectors.run_once("ehr")  # decided once: a later upstream change applies without a new conflict
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "Later"
    assert (await connectors.status("ehr"))[0]["counters"]["conflicts"] == 1


async def test_a_manual_conflict_waits_with_both_versions_and_is_settled_by_retry_or_discard(world):
    connectors = await _changed_on_both_sides(world, "manual")
    world.ehr.put(patient("p1", family="ChangedUpstream"))
    await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "ChangedInHearth"
    [letter] = await connectors.dead_letters("ehr")
    assert letter["reason"] == "conflict"
    assert fhir_json.loads(letter["raw"])["name"][0]["family"] == "ChangedUpstream"
    assert fhir_json.loads(letter["local"])["name"][0]["family"] == "ChangedInHearth"
    assert await connectors.discard("ehr", letter["id"])  # Hearth's version stays
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "ChangedInHearth"
    world.ehr.put(patient("p1", family="Again"))
    await connectors.run_once("ehr")  # Hearth's unchanged since the decision: the upstream change applies
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "Again"
    local = (await world.get("/Patient/ehr.p1")).json()
    local["name"][0]["family"] = "HearthAgain"
    await world.client.put("/Patient/ehr.p1", json=local, headers=FHIR_JSON)
    world.ehr.put(patient("p1", family="UpstreamAgain"))
    await connectors.run_once("ehr")
    [letter] = await connectors.dead_letters("ehr")
    assert await connectors.retry("ehr", letter["id"]) == [{"id": letter["id"], "result": "stored"}]
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "UpstreamAgain"


async def test_status_and_dead_letters_over_http(world):
    ehr = world.ehr
    ehr.put(patient("bad", gender="robot"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    await connectors.run_once("ehr")
    status = await world.client.get("/$connectors")
    assert status.status_code == 200
    [connector] = status.json()["parameter"]
    parts = {part["name"]: part for part in connector["part"]}
    assert parts["name"]["valueString"] == "ehr" and parts["state"]["valueString"] == "ok"
    counters = {p["name"]: p["valueInteger"] for p in parts["counters"]["part"]}
    assert counters["dead_lettered"] == 1
    listed = (await world.client.get("/$connector-dead-letters", params={"connector": "ehr"})).json()
    [letter] = listed["parameter"]
    letter_id = next(p["valueString"] for p in letter["part"] if p["name"] == "id")
    discard = {"resourceType": "Parameters", "parameter": [
        {"name": "connector", "valueString": "ehr"}, {"name": "action", "valueCode": "discard"},
        {"name": "id", "valueString": letter_id}]}
    done = await world.client.post("/$connector-dead-letters", json=discard, headers=FHIR_JSON)
    assert done.status_code == 200, done.text
    assert (await world.client.get("/$connector-dead-letters", params={"connector": "ehr"})).json() == \
        {"resourceType": "Parameters"}
    assert (await world.client.get("/$connectors", params={"name": "nope"})).status_code == 404


async def test_the_http_actions_are_for_the_admin_role(secured, tmp_path, fake_upstream):
    path = tmp_path / "connectors.toml"
    path.write_text(toml({"ehr": {"kind": "fhir-poll", "types": ["Patient"], "base": fake_upstream.base}}))
    connectors = await open_connectors(secured.app.ctx, replace(secured.app.settings, connectors=str(path)))
    try:
        clinician = await secured.token("user/*.cruds", name="clinician-app", role="clinician")
        admin = await secured.token("user/*.cruds", name="admin-app", role="admin")
        assert (await secured.client.get("/$connectors", headers=clinician)).status_code == 403
        assert (await secured.client.get("/$connectors")).status_code == 401
        answered = await secured.client.get("/$connectors", headers=admin)
        assert answered.status_code == 200 and answered.json()["parameter"][0]["part"][0]["valueString"] == "ehr"
    finally:
        await connectors.stop()


@pytest.fixture
async def fake_upstream():
    ehr = FakeEhr()
    await ehr.start()
    yield ehr
    await ehr.stop()


async def test_a_deletion_upstream_of_a_resource_changed_in_hearth_follows_the_policy(world):
    connectors = await _changed_on_both_sides(world, "manual")
    world.ehr.delete("Patient", "p1")
    await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "ChangedInHearth"
    [letter] = await connectors.dead_letters("ehr")
    assert letter["reason"] == "deleted-conflict"
    assert await connectors.retry("ehr", letter["id"]) == [{"id": letter["id"], "result": "deleted"}]
    assert (await world.get("/Patient/ehr.p1")).status_code == 410


async def test_a_local_wins_connector_keeps_hearths_edit_when_upstream_deletes(world):
    connectors = await _changed_on_both_sides(world, "local-wins")
    world.ehr.delete("Patient", "p1")
    status = await connectors.run_once("ehr")
    assert status["counters"]["conflicts"] == 1 and status["counters"]["deleted"] == 0
    assert (await world.get("/Patient/ehr.p1")).json()["name"][0]["family"] == "ChangedInHearth"


async def test_a_write_whose_sync_record_was_lost_is_not_a_conflict(world):
    """A crash between a page's writes and its sync records: the next pass finds Hearth holding what it would
    write, and records it, rather than calling the connector's own write a change made in Hearth."""
    world.ehr.put(patient("p1"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "conflict": "manual"})
    await connectors.run_once("ehr")
    state = connectors.get("ehr").state
    before = await state.synced(["Patient/p1"])
    world.ehr.put(patient("p1", family="Newer"))
    await connectors.run_once("ehr")
    await state.save_synced(before)  # as if the crash came before the record of version 2
    await state.save_checkpoint({})  # and the pass is run again from the start
    status = await connectors.run_once("ehr")
    assert status["counters"]["conflicts"] == 0 and await connectors.dead_letters("ehr") == []
    assert (await world.get("/Patient/ehr.p1")).json()["meta"]["versionId"] == "2"


async def test_masked_elements_are_neither_stored_nor_kept_in_dead_letters(world):
    world.ehr.put(patient("p1", telecom=[{"system": "phone", "value": "555"}]))
    world.ehr.put(patient("bad", gender="robot", telecom=[{"system": "phone", "value": "556"}]))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "mask": ["Patient.telecom"]})
    await connectors.run_once("ehr")
    stored = (await world.get("/Patient/ehr.p1")).json()
    assert "telecom" not in stored and {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                                        "code": "SUBSETTED"} in stored["meta"]["tag"]
    [letter] = await connectors.dead_letters("ehr")
    assert "556" not in letter["raw"] and "robot" in letter["raw"]


async def test_a_resource_of_no_resources_shape_is_a_dead_letter_not_a_crash(world):
    world.ehr.put(patient("p1"))
    world.ehr.put(patient("odd"))
    world.ehr._history[("Patient", "odd")][-1].resource["meta"] = "oops"  # served as an upstream might
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok" and status["counters"]["rejected"] == 1, status
    assert (await world.get("/Patient/ehr.p1")).status_code == 200
    [letter] = await connectors.dead_letters("ehr")
    assert letter["reason"] in ("malformed", "invalid") and "oops" in letter["raw"]


async def test_a_mask_names_every_choice_of_a_choice_element_and_drops_the_narrative(world):
    world.ehr.put(patient("p1"))
    world.ehr.put(observation("o1", "Patient/p1", text={"status": "generated",
                                                        "div": '<div xmlns="http://www.w3.org/1999/xhtml">72.5</div>'}))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient", "Observation"],
                                             "mask": ["Observation.value"]})
    await connectors.run_once("ehr")
    stored = (await world.get("/Observation/ehr.o1")).json()
    assert "valueQuantity" not in stored and "text" not in stored
