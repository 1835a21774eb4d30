"""The `bulk-export` connector against a fake upstream EHR (Bulk Data 2.0): only the declared types, at local ids
with references rewritten and `meta.source`; the job deleted upstream and the next export asked `_since` the
last one's transactionTime; status polling as slow as the upstream asks (Retry-After in seconds or as a date);
failing files retried, and a pass that fails resuming the same job (between files and in the middle of one);
a failed or forgotten export dropped for a new one; patient and group exports; export then polling (hybrid);
files downloaded with the token only when the manifest asks for it; a line that is not a JSON resource kept
as a dead letter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import fake_ehr
from connector_helpers import observation, patient, world  # noqa: F401 (fixture)
from fake_ehr import FakeEhr
from hearth.connectors.sync import Sink, StoreFailed
from hearth.capability import fhir_json
from hearth.connectors.upstream import Answer, Upstream

__all__ = ["world"]  # the fixture the tests take, imported for pytest (pyflakes ignores noqa, not this)


def bulk(*types: str, **extra: Any) -> dict[str, Any]:
    """A bulk-export connector's table (a high rate limit: the tests' many small requests are not slowed)."""
    return {"kind": "bulk-export", "types": list(types), "rate": 1000, **extra}


def kick_offs(ehr: FakeEhr) -> list[fake_ehr.FakeRequest]:
    return [request for request in ehr.requests if request.method == "GET" and request.path.endswith("$export")]


def status_polls(ehr: FakeEhr) -> list[fake_ehr.FakeRequest]:
    return [request for request in ehr.requests
            if request.method == "GET" and request.path.startswith("/$export-poll/")]


def downloads(ehr: FakeEhr) -> list[fake_ehr.FakeRequest]:
    return [request for request in ehr.requests if request.path.startswith("/$export-file/")]


def record_answers(connectors: Any, name: str) -> list[tuple[str, str, Any]]:
    """(method, path or URL, answer) of every request the connector's upstream client makes from now on."""
    upstream = connectors.get(name).upstream
    answers: list[tuple[str, str, Any]] = []
    original = upstream.request

    async def request(method: str, path_or_url: str, **options: Any) -> Any:
        answer = await original(method, path_or_url, **options)
        answers.append((method, path_or_url, answer))
        return answer
    upstream.request = request
    return answers


def kick_off_location(answers: list[tuple[str, str, Any]]) -> str:
    [location] = [answer.headers["Content-Location"] for method, path, answer in answers
                  if method == "GET" and path.endswith("$export")]
    return location


def manifests(answers: list[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    return [answer.json() for method, path_or_url, answer in answers
            if method == "GET" and "/$export-poll/" in path_or_url and answer.status == 200]


async def test_a_system_export_brings_the_declared_types_only_and_the_next_asks_since_its_time(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.put(patient("p2", family="Roe"))
    ehr.put(observation("o1", "Patient/p1", performer=[{"reference": "Practitioner/dr"}]))
    ehr.put({"resourceType": "Encounter", "id": "e1", "status": "finished",
             "class": {"code": "AMB"}, "subject": {"reference": "Patient/p1"}})
    connectors = await world.connectors(ehr=bulk("Patient", "Observation",
                                                 auth={"kind": "bearer", "token": "secret-token"}))
    answers = record_answers(connectors, "ehr")
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status

    [kick_off] = kick_offs(ehr)
    assert kick_off.path == "/$export" and kick_off.headers["Prefer"] == "respond-async"
    assert kick_off.query["_type"] == ["Patient,Observation"] and "_since" not in kick_off.query
    assert kick_off.headers["Authorization"] == "Bearer secret-token"
    [manifest] = manifests(answers)
    assert manifest["requiresAccessToken"] is False  # so the files are fetched without the token
    files = downloads(ehr)
    assert len(files) == 2 and not any("Authorization" in request.headers for request in files)
    stored = (await world.get("/Observation/ehr.o1")).json()
    assert stored["subject"]["reference"] == "Patient/ehr.p1"
    assert stored["performer"][0]["reference"] == f"{ehr.base}/Practitioner/dr"  # a type not synced: upstream's
    assert stored["meta"]["source"] == f"{ehr.base}/Observation/o1/_history/1"
    assert '"value":72.50' in (await world.get("/Observation/ehr.o1")).text  # decimals exactly as upstream
    assert sorted(p["id"] for p in await world.resources("Patient")) == ["ehr.p1", "ehr.p2"]
    assert (await world.get("/Patient/ehr.p2")).json()["name"][0]["family"] == "Roe"
    assert (await world.get("/Encounter/ehr.e1")).status_code == 404
    assert await world.resources("Encounter") == []
    assert status["counters"]["stored"] == 3 and status["counters"]["fetched"] == 3

    status_url = kick_off_location(answers)
    assert ehr.deleted_exports == [status_url]  # the finished job, deleted upstream
    assert status["checkpoint"]["exported_at"] == manifest["transactionTime"]
    assert "export" not in status["checkpoint"]

    status = await connectors.run_once("ehr")  # nothing changed upstream since
    assert status["state"] == "ok", status
    assert kick_offs(ehr)[1].query["_since"] == [manifest["transactionTime"]]
    assert status["counters"]["fetched"] == 3 and status["counters"]["stored"] == 3
    assert all(p["meta"]["versionId"] == "1" for p in await world.resources("Patient"))
    assert (await world.get("/Observation/ehr.o1")).json()["meta"]["versionId"] == "1"
    assert len(ehr.deleted_exports) == 2

    ehr.put(patient("p2", family="Changed"))
    status = await connectors.run_once("ehr")  # only what changed since the last export comes
    assert status["counters"]["fetched"] == 4 and status["counters"]["stored"] == 4
    assert (await world.get("/Patient/ehr.p2")).json()["meta"]["versionId"] == "2"
    assert (await world.get("/Patient/ehr.p1")).json()["meta"]["versionId"] == "1"


async def test_a_slow_export_is_polled_as_the_upstream_asks_in_seconds_or_by_date(world, caplog):
    caplog.set_level(logging.INFO, logger="hearth.connectors")
    ehr = world.ehr
    ehr.export_polls = 3
    ehr.export_retry_after = 1
    ehr.export_retry_after_date = True  # "1", then an HTTP-date a second ahead, then "1"
    ehr.put(patient("p1"))
    connectors = await world.connectors(ehr=bulk("Patient"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(seconds)
    connectors.get("ehr").upstream.sleep = sleep
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert (await world.get("/Patient/ehr.p1")).status_code == 200

    polls = status_polls(ehr)
    assert len(polls) == 4  # three "in progress", then the manifest
    assert polls[1].time - polls[0].time >= 0.9  # Retry-After: 1
    assert polls[3].time - polls[2].time >= 0.9
    assert waits[0] == 1.0 and waits[2] == 1.0
    assert 0.0 <= waits[1] <= 1.0  # the date read as a moment at most a second ahead (not the default wait)
    assert len(waits) == 3
    progress = [record.getMessage() for record in caplog.records if "in progress" in record.getMessage()]
    assert any(message.endswith(": 0%") for message in progress)
    assert any(message.endswith(": 66%") for message in progress)


async def test_a_file_failing_twice_is_downloaded_again_and_everything_stored(world):
    ehr = world.ehr
    ehr.export_file_lines = 2
    for n in range(5):
        ehr.put(patient(f"p{n}"))
    ehr.fail_export_file(2)
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    stored = await world.resources("Patient")
    assert sorted(p["id"] for p in stored) == [f"ehr.p{n}" for n in range(5)]
    assert all(p["meta"]["versionId"] == "1" for p in stored)
    assert len(downloads(ehr)) == 3 + 2  # three files, the first asked three times
    assert status["counters"]["fetched"] == 5 and status["counters"]["unchanged"] == 0


async def test_a_file_that_keeps_failing_fails_the_pass_and_the_next_resumes_the_same_job(world, monkeypatch):
    ehr = world.ehr
    ehr.export_file_lines = 2  # Observation [o0, o1], Patient [p0, p1], Patient [p2, p3]
    for n in range(4):
        ehr.put(patient(f"p{n}"))
    for n in range(2):
        ehr.put(observation(f"o{n}", f"Patient/p{n}"))
    armed: list[bool] = []
    original = Sink.store

    async def store(self: Sink, resources: list[dict[str, Any]]) -> None:
        await original(self, resources)
        if resources and not armed:  # once the first file is stored, the second fails every time asked
            armed.append(True)
            ehr.fail_export_file(4)  # the first attempt and the connector's 3 retries
    monkeypatch.setattr(Sink, "store", store)
    connectors = await world.connectors(ehr=bulk("Patient", "Observation"))
    status = await connectors.run_once("ehr")

    assert status["state"] == "failing", status
    job = status["checkpoint"]["export"]
    second_file = f"{job['status'].replace('$export-poll', '$export-file')}/1"
    assert second_file in status["last_error"]["message"]
    assert job["done"] == [f"{job['status'].replace('$export-poll', '$export-file')}/0"]
    assert ehr.deleted_exports == [] and "exported_at" not in status["checkpoint"]
    assert len(await world.resources("Observation")) == 2

    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert len(kick_offs(ehr)) == 1  # the same job, resumed
    assert ehr.deleted_exports == [job["status"]]
    assert [request.path.rsplit("/", 1)[1] for request in downloads(ehr)] == ["0"] + ["1"] * 5 + ["2"]
    for resource_type, count in (("Patient", 4), ("Observation", 2)):
        stored = await world.resources(resource_type)
        assert len(stored) == count and len({r["id"] for r in stored}) == count
        assert all(r["meta"]["versionId"] == "1" for r in stored)
    assert status["counters"]["fetched"] == 6 and status["counters"]["stored"] == 6
    assert status["counters"]["unchanged"] == 0
    assert "export" not in status["checkpoint"]


async def test_a_pass_that_stops_in_the_middle_of_a_file_resumes_after_its_last_stored_chunk(world, monkeypatch):
    ehr = world.ehr
    monkeypatch.setattr("hearth.connectors.bulk._CHUNK", 3)
    ehr.export_file_lines = 100  # one file of 10 lines: chunks of 3, 3, 3, 1
    for n in range(10):
        ehr.put(patient(f"p{n}"))
    calls: list[int] = []
    original = Sink.store

    async def store(self: Sink, resources: list[dict[str, Any]]) -> None:
        calls.append(len(resources))
        if len(calls) == 3:
            raise StoreFailed("Patient/ehr.p6: injected: the store is down")
        await original(self, resources)
    monkeypatch.setattr(Sink, "store", store)
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "failing", status
    assert "injected" in status["last_error"]["message"]
    job = status["checkpoint"]["export"]
    assert job["file"].endswith("/0") and job["lines"] == 6 and job["done"] == []
    assert len(await world.resources("Patient")) == 6

    again = await world.connectors(ehr=bulk("Patient"))  # a new process, say
    status = await again.run_once("ehr")
    assert status["state"] == "ok", status
    stored = await world.resources("Patient")
    assert sorted(p["id"] for p in stored) == sorted(f"ehr.p{n}" for n in range(10))
    assert all(p["meta"]["versionId"] == "1" for p in stored)
    assert len(kick_offs(ehr)) == 1 and len(downloads(ehr)) == 2  # the file again, its first 6 lines skipped
    assert calls[3:] == [3, 1]
    assert status["counters"]["fetched"] == 10 and status["counters"]["stored"] == 10
    assert status["counters"]["unchanged"] == 0
    assert "export" not in status["checkpoint"] and ehr.deleted_exports == [job["status"]]


async def test_a_failed_export_or_one_whose_file_is_gone_is_dropped_and_the_next_pass_starts_anew(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.export_fail = True
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "failing", status
    assert "the export failed" in status["last_error"]["message"]
    assert "export" not in status["checkpoint"] and "exported_at" not in status["checkpoint"]
    assert await world.resources("Patient") == []

    ehr.export_fail = False
    ehr.fail(404, 1, path_contains="/$export-file/")  # the second export's file, expired before it is fetched
    status = await connectors.run_once("ehr")
    assert status["state"] == "failing", status
    assert "404" in status["last_error"]["message"] and "export" not in status["checkpoint"]
    assert len(kick_offs(ehr)) == 2

    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert len(kick_offs(ehr)) == 3
    assert (await world.get("/Patient/ehr.p1")).json()["meta"]["versionId"] == "1"
    status = await connectors.run_once("ehr")  # nothing left half done to trip on
    assert status["state"] == "ok", status
    assert status["counters"]["fetched"] == 1 and status["counters"]["stored"] == 1
    assert "export" not in status["checkpoint"]


async def test_a_transient_failure_of_the_status_request_keeps_the_job(world, monkeypatch):
    monkeypatch.setitem(fake_ehr.ISSUE_CODES, 500, "transient")  # a polling failure, not the export's
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.fail(500, 2, path_contains="/$export-poll/")
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert len(kick_offs(ehr)) == 1 and len(status_polls(ehr)) == 2 + 3  # asked again, the same job
    assert (await world.get("/Patient/ehr.p1")).status_code == 200


async def test_an_unusable_manifest_fails_the_pass_and_the_next_asks_for_a_new_export(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    connectors = await world.connectors(ehr=bulk("Patient"))
    upstream = connectors.get("ehr").upstream
    original = upstream.request
    breakages = [{"transactionTime": "yesterday"}, {"output": [f"{ehr.base}/somewhere.ndjson"]}]

    async def request(method: str, path_or_url: str, **options: Any) -> Answer:
        answer = await original(method, path_or_url, **options)
        if "/$export-poll/" in path_or_url and method == "GET" and answer.status == 200 and breakages:
            return Answer(200, answer.headers, fhir_json.dumps({**answer.json(), **breakages.pop(0)}))
        return answer
    upstream.request = request
    status = await connectors.run_once("ehr")  # not a crash after the files are stored: a pass that fails
    assert status["state"] == "failing", status
    assert "transactionTime" in status["last_error"]["message"]
    status = await connectors.run_once("ehr")
    assert status["state"] == "failing", status
    assert "url" in status["last_error"]["message"] and "exported_at" not in status["checkpoint"]

    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert len(kick_offs(ehr)) == 3 and (await world.get("/Patient/ehr.p1")).status_code == 200


async def test_patient_and_group_exports_bring_their_patients_only(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.put(patient("p2", family="Roe"))
    ehr.put(observation("o1", "Patient/p1"))
    ehr.put(observation("o2", "Patient/p2"))
    ehr.put({"resourceType": "Observation", "id": "o3", "status": "final",  # no patient: in no compartment
             "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}})
    ehr.put({"resourceType": "Group", "id": "g1", "type": "person", "actual": True,
             "member": [{"entity": {"reference": "Patient/p1"}}]})
    connectors = await world.connectors(
        patients=bulk("Patient", "Observation", export_level="patient"),
        group=bulk("Patient", "Observation", export_level="group/g1"))
    status = await connectors.run_once("patients")
    assert status["state"] == "ok", status
    status = await connectors.run_once("group")
    assert status["state"] == "ok", status
    assert [request.path for request in kick_offs(ehr)] == ["/Patient/$export", "/Group/g1/$export"]

    ids = {resource["id"] for resource_type in ("Patient", "Observation")
           for resource in await world.resources(resource_type)}
    assert ids == {"patients.p1", "patients.p2", "patients.o1", "patients.o2", "group.p1", "group.o1"}
    assert (await world.get("/Observation/group.o1")).json()["subject"]["reference"] == "Patient/group.p1"
    assert (await world.get("/Group/group.g1")).status_code == 404


async def test_a_hybrid_connector_exports_once_then_polls(world):
    ehr = world.ehr
    ehr.put(patient("p1"))
    ehr.put(patient("p2"))
    connectors = await world.connectors(ehr=bulk("Patient", then_poll=True))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    exported_at = status["checkpoint"]["exported_at"]
    assert len(await world.resources("Patient")) == 2
    asked = len(ehr.requests)

    ehr.put(patient("p1", family="Changed"))
    ehr.put(patient("p3"))
    ehr.delete("Patient", "p2")
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    later = ehr.requests[asked:]
    assert not any(request.path.endswith("$export") for request in later)
    searches = [request for request in later if request.path == "/Patient" and "_lastUpdated" in request.query]
    assert searches and searches[0].query["_lastUpdated"] == [f"gt{exported_at}"]
    changed = (await world.get("/Patient/ehr.p1")).json()
    assert changed["name"][0]["family"] == "Changed" and changed["meta"]["versionId"] == "2"
    assert (await world.get("/Patient/ehr.p3")).status_code == 200
    assert (await world.get("/Patient/ehr.p2")).status_code == 410
    assert len(kick_offs(ehr)) == 1


async def test_files_are_downloaded_with_the_token_when_the_manifest_requires_it(world):
    secured = FakeEhr(require_token=True, clients={"c": "s"})
    await secured.start()
    try:
        secured.put(patient("p1"))
        secured.put(patient("p2"))
        connectors = await world.connectors(ehr=bulk(
            "Patient", base=secured.base, auth={"kind": "client-secret", "client_id": "c", "secret": "s"}))
        answers = record_answers(connectors, "ehr")
        status = await connectors.run_once("ehr")
        assert status["state"] == "ok", status
        assert [manifest["requiresAccessToken"] for manifest in manifests(answers)] == [True]
        files = downloads(secured)
        assert files and all(request.headers.get("Authorization", "").startswith("Bearer ") for request in files)
        assert any(request.path == "/auth/token" for request in secured.requests)
        assert sorted(p["id"] for p in await world.resources("Patient")) == ["ehr.p1", "ehr.p2"]
    finally:
        await secured.stop()


async def test_a_line_that_is_not_a_resource_is_a_dead_letter_and_the_others_are_stored(world, monkeypatch):
    ehr = world.ehr
    for n in range(3):
        ehr.put(patient(f"p{n}"))
    original = Upstream.lines

    async def lines(self: Upstream, url: str, skip: int = 0, authorized: bool = True):
        delivered = 0
        async for line in original(self, url, skip=skip, authorized=authorized):
            yield line
            delivered += 1
            if delivered == 1:  # the upstream wrote two broken lines after its first
                yield b'{"resourceType": "Patient", "id": "cut'
                yield b'["not", "a", "resource"]'
    monkeypatch.setattr(Upstream, "lines", lines)
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert sorted(p["id"] for p in await world.resources("Patient")) == [f"ehr.p{n}" for n in range(3)]
    letters = await connectors.dead_letters("ehr")
    assert sorted(letter["reason"] for letter in letters) == ["malformed", "malformed"]
    assert {letter["raw"] for letter in letters} == {'{"resourceType": "Patient", "id": "cut',
                                                     '["not", "a", "resource"]'}
    assert all("/$export-file/" in letter["url"] for letter in letters)
    assert status["counters"]["stored"] == 3 and status["counters"]["rejected"] == 2
    assert status["counters"]["dead_lettered"] == 2


async def test_a_line_longer_than_aiohttps_line_reader_takes_is_stored(world):
    """A resource with a large narrative or attachment is one NDJSON line of hundreds of kilobytes."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * 600_000 + "</div>"
    world.ehr.put(patient("big", text={"status": "generated", "div": div}))
    world.ehr.put(patient("small"))
    connectors = await world.connectors(ehr=bulk("Patient"))
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    assert len((await world.get("/Patient/ehr.big")).json()["text"]["div"]) == len(div)
    assert (await world.get("/Patient/ehr.small")).status_code == 200
