"""The `fhir-poll` connector against a fake upstream EHR: only the declared types, local ids and references,
`meta.source`, unchanged resources cost no version, paging through ties and opaque links, a resource changed
while paging, history when the search cannot be incremental, deletions, two connectors on one patient."""

from __future__ import annotations

from connector_helpers import FHIR_JSON, observation, patient, world  # noqa: F401 (fixture)
from subscription_helpers import Receiver, r4_subscription


async def test_a_pass_brings_the_declared_types_only_at_local_ids_with_references_rewritten(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.put(observation("o1", "Patient/p1", performer=[{"reference": "Practitioner/dr"}]))
    ehr.put({"resourceType": "Encounter", "id": "e1", "status": "finished",
             "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}})
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient", "Observation"]})
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    stored = (await world.get("/Observation/ehr.o1")).json()
    assert stored["subject"]["reference"] == "Patient/ehr.p1"
    assert stored["performer"][0]["reference"] == f"{ehr.base}/Practitioner/dr"  # a type not synced: upstream's
    assert stored["meta"]["source"] == f"{ehr.base}/Observation/o1/_history/1"
    assert '"value":72.50' in (await world.get("/Observation/ehr.o1")).text  # decimals exactly as upstream
    assert (await world.get("/Patient/ehr.p1")).status_code == 200
    assert (await world.get("/Encounter/ehr.e1")).status_code == 404
    assert not any("Encounter" in request.path for request in ehr.requests)  # not even asked for
    assert status["counters"]["stored"] == 2


async def test_an_unchanged_resource_makes_no_new_version_and_a_changed_one_does(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    await connectors.run_once("ehr")
    await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p1")).json()["meta"]["versionId"] == "1"
    ehr.put(patient("p1", family="Roe"))
    status = await connectors.run_once("ehr")
    stored = (await world.get("/Patient/ehr.p1")).json()
    assert stored["meta"]["versionId"] == "2" and stored["name"][0]["family"] == "Roe"
    assert stored["meta"]["source"].endswith("/Patient/p1/_history/2")
    assert status["counters"]["stored"] == 2


async def test_pages_with_ties_and_opaque_links_bring_each_resource_once(world):
    ehr = world.ehr
    for n in range(23):  # five instants, shared across page boundaries (pages of 5)
        ehr.put(patient(f"p{n}"), last_updated=f"2026-01-01T00:00:0{n // 5}.000000Z")
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    status = await connectors.run_once("ehr")
    stored = await world.resources("Patient")
    assert sorted(p["id"] for p in stored) == sorted(f"ehr.p{n}" for n in range(23))
    assert all(p["meta"]["versionId"] == "1" for p in stored)
    assert any("_getpages" in str(request.query) for request in ehr.requests)  # followed the upstream's links
    assert status["checkpoint"]["types"]["Patient"].startswith("2026-01-01T00:00:03")  # below the newest instant
    ehr.put(patient("late"), last_updated="2026-01-01T00:00:09.000000Z")
    await connectors.run_once("ehr")
    assert len(await world.resources("Patient")) == 24


async def test_a_resource_changed_while_paging_arrives_in_its_newest_version(world):
    ehr = world.ehr
    for n in range(12):
        ehr.put(patient(f"p{n}"), last_updated=f"2026-01-01T00:00:{n:02d}.000000Z")

    def change(page: int) -> None:
        if page == 1:
            ehr.put(patient("p0", family="Changed"))
    ehr.on_page = change
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    await connectors.run_once("ehr")
    ehr.on_page = None
    await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p0")).json()["name"][0]["family"] == "Changed"
    assert len(await world.resources("Patient")) == 12


async def test_deletions_upstream_delete_in_hearth(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.put(patient("p2"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    await connectors.run_once("ehr")
    ehr.delete("Patient", "p1")
    status = await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p1")).status_code == 410
    assert (await world.get("/Patient/ehr.p2")).status_code == 200
    assert status["counters"]["deleted"] == 1


async def test_an_upstream_without_incremental_search_is_synced_by_history(world):
    ehr = world.ehr
    ehr_history = type(ehr)(page_size=5, supports_last_updated=False)
    await ehr_history.start()
    try:
        for n in range(7):
            ehr_history.put(patient(f"p{n}"))
        ehr_history.put(patient("p3", family="Newest"))
        connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"],
                                                 "base": ehr_history.base})
        status = await connectors.run_once("ehr")
        assert status["state"] == "ok", status
        stored = {p["id"]: p for p in await world.resources("Patient")}
        assert len(stored) == 7 and stored["ehr.p3"]["name"][0]["family"] == "Newest"
        assert stored["ehr.p3"]["meta"]["versionId"] == "1"  # only the newest version was stored
        ehr_history.delete("Patient", "p2")
        ehr_history.put(patient("p4", family="Later"))
        await connectors.run_once("ehr")
        assert (await world.get("/Patient/ehr.p2")).status_code == 410
        assert (await world.get("/Patient/ehr.p4")).json()["name"][0]["family"] == "Later"
        assert any(request.path.endswith("/_history") for request in ehr_history.requests)
    finally:
        await ehr_history.stop()


async def test_two_connectors_bringing_the_same_patient_do_not_collide(world):
    other = type(world.ehr)()
    await other.start()
    try:
        world.ehr.put(patient("123", family="FromA"))
        other.put(patient("123", family="FromB"))
        connectors = await world.connectors(a={"kind": "fhir-poll", "types": ["Patient"]},
                                            b={"kind": "fhir-poll", "types": ["Patient"], "base": other.base})
        await connectors.run_once("a")
        await connectors.run_once("b")
        assert (await world.get("/Patient/a.123")).json()["name"][0]["family"] == "FromA"
        assert (await world.get("/Patient/b.123")).json()["name"][0]["family"] == "FromB"
    finally:
        await other.stop()


async def test_what_a_connector_stores_is_announced_to_subscriptions_and_audited(world):
    receiver = await Receiver().start()
    try:
        subscription = r4_subscription("Patient?family=Doe", receiver.url + "/hook", payload="application/fhir+json")
        assert (await world.client.post("/Subscription", json=subscription, headers=FHIR_JSON)).status_code == 201
        world.ehr.put(patient("p1"))
        connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
        await connectors.run_once("ehr")
        [notification] = await receiver.wait_for(1)
        assert notification.path == "/hook/Patient/ehr.p1"  # R4 rest-hook with a payload: the resource, PUT
        assert notification.json()["meta"]["source"] == f"{world.ehr.base}/Patient/p1/_history/1"
        audit = (await world.get("/AuditEvent", agent="connector/ehr", entity="Patient/ehr.p1")).json()
        [event] = [e["resource"] for e in audit["entry"]]
        assert event["subtype"][0]["code"] == "create" and event["outcome"] == "0"  # update-as-create
    finally:
        await receiver.stop()


async def test_a_write_upstream_at_the_instant_of_the_newest_one_seen_is_not_lost(world):
    """Upstreams with second-precision times give a later write the same lastUpdated as the newest one synced."""
    world.ehr.put(patient("p1"), last_updated="2026-01-01T00:00:05Z")
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    await connectors.run_once("ehr")
    world.ehr.put(patient("p2"), last_updated="2026-01-01T00:00:05Z")
    status = await connectors.run_once("ehr")
    assert (await world.get("/Patient/ehr.p2")).status_code == 200
    assert status["counters"]["stored"] == 2 and status["counters"]["unchanged"] == 1  # p1 again, no write
