"""Every interaction, from every source, passes the one dispatcher: a test policy hiding one Patient and one
Observation hides them from reads, searches and their totals, includes, history, batch and transaction entries,
compartments, operation outputs and notifications alike, and sees every request with its caller."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from conftest import BASE, FHIR_JSON, make_store
from hearth.interactions.request import Caller, Request
from hearth.interactions.search import parse_query
from hearth.search.ir import Query
from hearth.server.app import create_app
from hearth.server.load import Loader
from hearth.storage.base import Version
from subscription_helpers import Receiver, backport_subscription, r4_subscription, wait_until
from test_subscriptions import settings_for

HIDDEN = {("Patient", "p-hidden"), ("Observation", "o-hidden")}


class Hiding:
    """A policy: every caller but the system itself is kept from the HIDDEN resources; every request is kept."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.seen: list[Request] = []

    def before(self, request: Request) -> None:
        self.seen.append(request)

    def restrict(self, caller: Caller, query: Query) -> Query:
        if caller.kind == "system":
            return query
        for resource_type, resource_id in HIDDEN:
            if not query.types or resource_type in query.types:
                hide = parse_query(self.ctx, (resource_type,), [("_id:not", resource_id)], True)
                query = replace(query, where=query.where + hide.where)
        return query

    def after(self, request: Request, version: Version) -> Version | None:
        hidden = (version.type, version.id) in HIDDEN and request.caller.kind != "system"
        return None if hidden else version

    def sees_all(self, request: Request) -> bool:
        return request.caller.kind == "system"

    async def admit(self, caller: Caller, writes) -> None:
        return None


def patient(patient_id: str, family: str) -> dict:
    return {"resourceType": "Patient", "id": patient_id, "gender": "female", "name": [{"family": family}]}


def observation(observation_id: str, subject: str) -> dict:
    return {"resourceType": "Observation", "id": observation_id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{subject}"}}


@pytest.fixture
async def hiding(backend: str, tmp_path: Path):
    app = create_app(settings_for(tmp_path), make_store(backend, tmp_path))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        for resource in (patient("p-hidden", "Hidden"), patient("p-shown", "Shown"),
                         observation("o-hidden", "p-shown"), observation("o-shown", "p-hidden"),
                         observation("o-other", "p-shown")):
            assert (await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource,
                                     headers=FHIR_JSON)).status_code == 201
        policy = app.ctx.policy = Hiding(app.ctx)
        yield app, client, policy
    await app.shutdown()


def ids(bundle: dict) -> set[tuple[str, str]]:
    return {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle.get("entry", ()) if "resource" in e}


async def test_reads_and_vreads(hiding):
    _, client, _ = hiding
    for url in ("/Patient/p-hidden", "/Patient/p-hidden/_history/1", "/Observation/o-hidden"):
        response = await client.get(url)
        assert response.status_code == 404, url  # as if it did not exist: 403 would say it does
    assert (await client.get("/Patient/p-shown")).status_code == 200


async def test_searches_counts_includes_and_compartments(hiding):
    _, client, _ = hiding
    found = (await client.get("/Patient", params={"gender": "female"})).json()
    assert ids(found) == {("Patient", "p-shown")} and found["total"] == 1
    counted = (await client.get("/Patient", params={"_summary": "count"})).json()
    assert counted["total"] == 1
    system = (await client.get("/", params={"_type": "Patient,Observation"})).json()
    assert ids(system) & HIDDEN == set()
    included = (await client.get("/Observation", params={"_include": "Observation:subject"})).json()
    assert ("Patient", "p-hidden") not in ids(included) and ("Observation", "o-shown") in ids(included)
    revincluded = (await client.get("/Patient", params={"_id": "p-shown", "_revinclude": "Observation:subject"})).json()
    assert ids(revincluded) == {("Patient", "p-shown"), ("Observation", "o-other")}
    compartment = (await client.get("/Patient/p-shown/Observation")).json()
    assert ids(compartment) == {("Observation", "o-other")}


async def test_history_at_every_level(hiding):
    _, client, _ = hiding
    hidden = await client.get("/Patient/p-hidden/_history")  # as if it did not exist
    assert hidden.status_code == 404 and hidden.json()["resourceType"] == "OperationOutcome"
    for url in ("/Patient/_history", "/_history"):
        response = await client.get(url)
        assert response.status_code == 200, url
        assert ids(response.json()) & HIDDEN == set(), url
        assert "total" not in response.json(), url  # a total would count the hidden versions
    assert ("Patient", "p-shown") in ids((await client.get("/_history")).json())


async def test_batch_and_transaction_entries(hiding):
    app, client, policy = hiding
    gets = [{"request": {"method": "GET", "url": url}} for url in
            ("Patient/p-hidden", "Patient?gender=female", "Patient/p-hidden/_history", "Observation/o-shown")]
    batch = (await client.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": gets},
                               headers=FHIR_JSON)).json()
    statuses = [entry["response"]["status"] for entry in batch["entry"]]
    assert [s[:3] for s in statuses] == ["404", "200", "404", "200"]  # hidden: as if it did not exist
    assert ids(batch["entry"][1]["resource"]) & HIDDEN == set()
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "Patient/p-new"}, "resource": patient("p-new", "New")},
        {"request": {"method": "GET", "url": "Patient?gender=female"}}]}
    answered = (await client.post("/", json=transaction, headers=FHIR_JSON)).json()
    assert ids(answered["entry"][1]["resource"]) == {("Patient", "p-shown"), ("Patient", "p-new")}
    asked = [(r.interaction, r.type, r.caller.kind) for r in policy.seen]
    assert ("batch", None, "anonymous") in asked and ("transaction", None, "anonymous") in asked
    assert ("read", "Patient", "anonymous") in asked and ("history-instance", "Patient", "anonymous") in asked
    assert ("update", "Patient", "anonymous") in asked  # the transaction's write entry, asked on its own


async def test_patch_documents_in_a_batch_go_through_the_dispatcher(hiding):
    _, client, policy = hiding
    document = base64.b64encode(json.dumps([{"op": "add", "path": "/active", "value": True}]).encode()).decode()
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{
        "request": {"method": "PATCH", "url": "Patient/p-shown"},
        "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": document}}]}
    answered = (await client.post("/", json=batch, headers=FHIR_JSON)).json()
    assert answered["entry"][0]["response"]["status"].startswith("200")
    assert ("patch", "Patient") in [(r.interaction, r.type) for r in policy.seen]


async def test_notifications_and_operation_outputs(hiding, receiver_at):
    app, client, _ = hiding
    receiver = receiver_at
    r4 = await client.post("/Subscription", json=r4_subscription(
        "Patient?gender=female", receiver.url + "/r4", payload="application/fhir+json"), headers=FHIR_JSON)
    backport = await client.post("/Subscription", json=backport_subscription(
        "resource-change", ["Patient?gender=female"], receiver.url + "/backport",
        content="full-resource"), headers=FHIR_JSON)
    assert r4.status_code == backport.status_code == 201, (r4.text, backport.text)
    for resource in (patient("p-hidden", "Hidden again"), patient("p-shown", "Shown again")):
        await client.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR_JSON)

    def delivered(path: str) -> list:
        return [r for r in receiver.received if r.path.startswith(path)]
    await wait_until(lambda: any(b"Shown again" in r.body for r in delivered("/r4")), "the visible notification")
    await wait_until(lambda: any(b"Shown again" in r.body for r in delivered("/backport")), "the backport event")
    for received in receiver.received:
        assert b"p-hidden" not in received.body, received.path
    events = (await client.get(f"/Subscription/{backport.json()['id']}/$events")).json()
    assert b"p-hidden" not in json.dumps(events).encode() and b"p-shown" in json.dumps(events).encode()


async def test_import_goes_through_the_dispatcher_as_the_system(hiding, tmp_path):
    app, client, policy = hiding
    lines = [json.dumps(patient("p-imported", "Imported")), json.dumps(observation("o-imported", "p-imported"))]
    (tmp_path / "data.ndjson").write_text("\n".join(lines))
    report = await Loader(app.ctx).load([tmp_path / "data.ndjson"])
    assert not report.errors and report.resources == 2
    imported = [r for r in policy.seen if r.caller.kind == "system" and r.caller.id == "import"]
    assert {(r.interaction, r.type) for r in imported} == {("update", "Patient"), ("update", "Observation")}


@pytest.fixture
async def receiver_at():
    server = await Receiver().start()
    yield server
    await server.stop()
