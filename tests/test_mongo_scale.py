"""What keeps the MongoDB backend right at size and under several processes (issue 18): the indexes it creates,
event numbering under racing dispatchers, history totals, documents over the BSON limit, single-valued date
bounds, chains and `_has` in bounded batches. On mongomock-motor (no MongoDB server here): plans and results are
checked, not the server's index use or limits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import pytest
from mongomock_motor import AsyncMongoMockClient

from conftest import BASE, FHIR_JSON
from hearth.storage.base import WriteTooLarge
from hearth.storage.mongo import documents, unions
from hearth.storage.mongo.notification_queue import MongoNotificationQueue
from hearth.storage.mongo.store import MongoStore
from hearth.storage.notification_records import NewEvent
from test_store_contract import write


def shared_database() -> tuple[AsyncMongoMockClient, str]:
    return AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}"


async def test_open_creates_the_search_indexes_and_drops_the_superseded_one():
    client, name = shared_database()
    store = MongoStore(client, name)
    await store.resources.create_index([("type", 1), ("last_updated", 1)])  # as an older Hearth made it
    await store.open()
    await store.open()  # again, as every process does at start-up: nothing changes, no error
    indexes = {tuple(tuple(key) for key in index["key"]): index.get("partialFilterExpression")
               for index in (await store.resources.index_information()).values()}
    assert indexes[(("type", 1), ("_id", 1))] == {"deleted": False}
    assert indexes[(("type", 1), ("last_updated", 1), ("_id", 1))] == {"deleted": False}
    assert indexes[(("type", 1), ("created", 1), ("_id", 1))] is None
    assert (("type", 1), ("last_updated", 1)) not in indexes


# --- event numbering -----------------------------------------------------------------------------------------

class _Yielding:
    """A collection whose every operation first lets other tasks run (mongomock never yields), so two dispatchers
    interleave at each round trip as they would on a server."""

    def __init__(self, collection) -> None:
        self._collection = collection

    def __getattr__(self, name: str):
        method = getattr(self._collection, name)
        if not asyncio.iscoroutinefunction(method):
            return method

        async def call(*args, **kwargs):
            await asyncio.sleep(0)
            return await method(*args, **kwargs)
        return call


def racing_queues(count: int = 2) -> list[MongoNotificationQueue]:
    """`count` queues on one database, as the dispatchers of separate processes would have."""
    client, name = shared_database()
    queues = []
    for _ in range(count):
        queue = MongoNotificationQueue(MongoStore(client, name))
        for collection in ("checkpoints", "event_rows", "counters", "deliveries"):
            setattr(queue, collection, _Yielding(getattr(queue, collection)))
        queues.append(queue)
    return queues


def new_events(subscription: str, seqs: range) -> list[NewEvent]:
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [NewEvent(subscription, seq, "Patient", f"p{seq}", 1, "create", at, True) for seq in seqs]


async def assert_numbered_once(queue: MongoNotificationQueue, subscription: str, seqs: range) -> None:
    events = await queue.events(subscription, 1, None, 1000)
    assert [(e.number, e.seq) for e in events] == list(enumerate(seqs, 1))
    assert await queue.event_count(subscription) == len(seqs)
    deliveries = await queue.deliveries.find({"subscription": subscription}).to_list(None)
    assert sorted(d["number"] for d in deliveries) == list(range(1, len(seqs) + 1))


async def test_racing_dispatchers_number_each_event_once_without_gaps():
    first, second = racing_queues()
    await first.open()
    results = await asyncio.gather(first.enqueue(0, 20, new_events("a", range(1, 21)), (), 0.0),
                                   second.enqueue(0, 30, new_events("a", range(1, 31)), (), 0.0))
    assert sorted(results) == [False, True]
    await assert_numbered_once(first, "a", range(1, 31))
    # a third pass over what is recorded (a dispatcher that lost the checkpoint and starts again) adds nothing
    assert await first.enqueue(await first.checkpoint(), 40, new_events("a", range(21, 41)), (), 0.0)
    await assert_numbered_once(second, "a", range(1, 41))


async def test_an_event_numbered_by_a_dispatcher_that_died_keeps_its_number():
    first, second = racing_queues()
    await first.open()
    events = new_events("b", range(1, 6))
    insert = first.event_rows.insert_one

    async def dies_at_the_third(document, *args, **kwargs):
        if document["seq"] == 3:
            raise ConnectionError("the process died")
        return await insert(document, *args, **kwargs)
    first.event_rows.insert_one = dies_at_the_third
    try:
        await first.enqueue(0, 5, events, (), 0.0)
    except ConnectionError:
        pass
    assert await second.enqueue(0, 5, events, (), 0.0)
    await assert_numbered_once(second, "b", range(1, 6))


# --- history totals ------------------------------------------------------------------------------------------

async def test_history_counts_only_when_asked_and_not_when_the_first_page_holds_everything():
    store = MongoStore(*shared_database())
    await store.open()
    for version in range(1, 4):
        await store.commit([write("Patient", "a", version)])
    await store.commit([write("Patient", "b", 1)])
    counted = []
    count_documents = store.history_versions.count_documents

    async def counting(*args, **kwargs):
        counted.append(args)
        return await count_documents(*args, **kwargs)
    store.history_versions.count_documents = counting
    assert (await store.history("Patient", None, None, None, 2)).total is None and counted == []
    assert (await store.history("Patient", "a", None, None, 10, total=True)).total == 3 and counted == []
    page = await store.history("Patient", None, None, None, 2, total=True)
    assert page.total == 4 and len(counted) == 1
    assert (await store.history("Patient", None, None, page.entries[-1][0], 2)).total is None and len(counted) == 1


# --- documents over the BSON limit ---------------------------------------------------------------------------

async def test_a_version_over_the_document_limit_is_refused_and_nothing_is_written():
    store = MongoStore(*shared_database())
    await store.open()
    body = b'{"resourceType":"Binary","data":"' + b"A" * (16 * 1024 * 1024) + b'"}'
    with pytest.raises(WriteTooLarge) as refused:
        await store.commit([write("Binary", "big", 1, body)])
    assert refused.value.size > refused.value.limit == 16 * 1024 * 1024
    assert await store.read("Binary", "big") is None and await store.changes(0, 10) == []
    assert await store.history_versions.count_documents({}) == 0


@pytest.mark.parametrize("backend", ["mongo"])
async def test_a_resource_too_large_to_store_is_a_413_alone_and_in_a_transaction(client, monkeypatch):
    """The HTTP limit lets a body through that its stored document, index entries and all, would not fit (here a
    32 KiB document limit stands in for MongoDB's 16 MiB)."""
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 32 * 1024)
    patient = {"resourceType": "Patient", "name": [{"given": [f"{n:04}" + "y" * 96 for n in range(200)]}]}
    for response in (await client.post("/Patient", json=patient, headers=FHIR_JSON),
                     await client.put("/Patient/big", json={**patient, "id": "big"}, headers=FHIR_JSON),
                     await client.post("/", headers=FHIR_JSON, json={
                         "resourceType": "Bundle", "type": "transaction",
                         "entry": [{"resource": patient, "request": {"method": "POST", "url": "Patient"}}]})):
        assert response.status_code == 413
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "too-costly"
    assert (await client.get("/Patient")).json().get("total", 0) == 0
    small = await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
    assert small.status_code == 201


# --- searches: the commands they send --------------------------------------------------------------------------

class _Commands:
    """The resources collection, noting the filter of every find and count sent through it."""

    def __init__(self, collection, filters: list) -> None:
        self._collection, self._filters = collection, filters

    def __getattr__(self, name: str):
        method = getattr(self._collection, name)
        if name not in ("find", "count_documents"):
            return method

        def call(condition, *args, **kwargs):
            self._filters.append(condition)
            return method(condition, *args, **kwargs)
        return call


def noted_filters(app) -> list:
    """The filters the app's MongoDB searches send from now on."""
    noted: list = []
    store = app.ctx.store
    store.resources = _Commands(store.resources, noted)
    return noted


def parts(condition, key: str) -> list:
    """Every value of `key` anywhere in a filter."""
    if isinstance(condition, dict):
        found = [condition[key]] if key in condition else []
        return found + [part for value in condition.values() for part in parts(value, key)]
    if isinstance(condition, list):
        return [part for value in condition for part in parts(value, key)]
    return []


@pytest.mark.parametrize("backend", ["mongo"])
async def test_single_valued_date_clauses_are_one_bounded_entry_condition(client, app):
    for n, born in enumerate(["1981-12-31", "1982-01-01", "1982-06", "1982-12-31", "1983-01-01", "1982"]):
        written = await client.put(f"/Patient/d{n}", json={"resourceType": "Patient", "id": f"d{n}", "birthDate": born},
                                   headers=FHIR_JSON)
        assert written.status_code == 201
    noted = noted_filters(app)
    found = (await client.get("/Patient?birthdate=ge1982-01-01&birthdate=lt1983-01-01")).json()
    assert sorted(entry["resource"]["id"] for entry in found["entry"]) == ["d1", "d2", "d3", "d5"]
    matches = parts(noted, "dt")
    assert len(matches) == 1  # one condition on the one entry, not one per clause
    assert {"$gte", "$lte"} <= set(matches[0]["$elemMatch"]["lo"])  # its `lo` bounded on both sides


async def _pages(client, url: str) -> tuple[int | None, list[list[str]], list[list[str]]]:
    """A search's total, its pages' ids following `next` links, then following `previous` links back."""
    def ids(bundle: dict) -> list[str]:
        return [entry["resource"]["id"] for entry in bundle.get("entry", ())]

    def link(bundle: dict, relation: str) -> str | None:
        url = next((link["url"] for link in bundle["link"] if link["relation"] == relation), None)
        return url[len(BASE):] if url else None
    bundle = (await client.get(url)).json()
    total, forward = bundle.get("total"), [ids(bundle)]
    while (following := link(bundle, "next")) is not None:
        bundle = (await client.get(following)).json()
        forward.append(ids(bundle))
    backward = [ids(bundle)]
    while (preceding := link(bundle, "previous")) is not None:
        bundle = (await client.get(preceding)).json()
        backward.append(ids(bundle))
    return total, forward, backward


BATCHED_SEARCHES = [
    "Observation?subject:Patient.gender=female&_total=accurate&_count=3",
    "Observation?performer.family=smith&_total=accurate&_count=4&_sort=-date",
    "Observation?subject:Patient.gender=female&performer.family=smith&_total=accurate&_count=2&_sort=date",
    "Patient?_has:Observation:subject:code=a&_total=accurate&_count=2&_sort=birthdate",
    "Patient?_has:Observation:subject:performer.family=smith&_total=accurate&_count=2",
    "Observation?performer.family=smith&_summary=count",
]


@pytest.mark.parametrize("backend", ["mongo"])
async def test_chains_and_has_in_capped_batches_answer_as_in_one_command(client, app, monkeypatch):
    for n in range(6):
        await client.put(f"/Practitioner/pr{n}", headers=FHIR_JSON, json={
            "resourceType": "Practitioner", "id": f"pr{n}", "name": [{"family": "smith" if n % 2 == 0 else "jones"}]})
    for n in range(7):
        await client.put(f"/Patient/p{n}", headers=FHIR_JSON, json={
            "resourceType": "Patient", "id": f"p{n}", "gender": "female" if n % 2 else "male",
            "birthDate": f"19{50 + (n * 3) % 7}-01-01"})
    for n in range(20):  # two performers each, both smiths for some: in two batches of smiths, counted once
        await client.put(f"/Observation/o{n}", headers=FHIR_JSON, json={
            "resourceType": "Observation", "id": f"o{n}", "status": "final",
            "code": {"coding": [{"system": "urn:test", "code": "a" if n % 3 else "b"}]},
            "subject": {"reference": f"Patient/p{n % 7}"}, "effectiveDateTime": f"2020-01-{1 + (n * 7) % 20:02}",
            "performer": [{"reference": f"Practitioner/pr{n % 6}"}, {"reference": f"Practitioner/pr{(n + 2) % 6}"}]})
    whole = [await _pages(client, url) for url in BATCHED_SEARCHES]
    assert all(total for total, _, _ in whole) and any(len(forward) > 2 for _, forward, _ in whole)
    monkeypatch.setattr(unions, "IN_LIMIT", 2)
    noted = noted_filters(app)
    assert [await _pages(client, url) for url in BATCHED_SEARCHES] == whole
    keys = [value["$in"] for field in ("r", "_id") for value in parts(noted, field)
            if isinstance(value, dict) and "$in" in value]
    assert max(len(batch) for batch in keys) == 2  # the keys of chains and `_has` in batches of 2, none longer


async def test_the_change_log_is_read_and_written_with_majority_concerns():
    store = MongoStore(*shared_database())
    assert store.change_log.read_concern.level == "majority"
    assert store.change_log.write_concern.document == {"w": "majority"}
