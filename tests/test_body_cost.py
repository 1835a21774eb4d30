"""What one body may cost (issue 12): the JSON values of a resource are bounded (HEARTH_MAX_RESOURCE_ELEMENTS) and
so is its nesting, on every write path; large bodies are parsed, validated, stamped, serialised and indexed on
worker threads, so that the server keeps answering (GET /healthz) while one is processed."""

from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
import pytest

from hearth.capability import fhir_json
from hearth.capability.validation import MAX_DEPTH
from conftest import BASE, FHIR_JSON, make_store
from hearth.server.app import HearthApp, create_app
from hearth.interactions import crud, resources, transaction
from hearth.interactions.resources import OFF_LOOP_BYTES
from hearth.server.load import Loader
from hearth.server.settings import Settings

MAX_BODY = 16 * 1024 * 1024
WRITE_PATHS = ("POST", "PUT", "conditional create", "conditional update", "batch", "transaction", "import")


@asynccontextmanager
async def serving(backend: str, tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[HearthApp, httpx.AsyncClient]]:
    app = create_app(Settings(storage=str(tmp_path / "h.db"), base_url=BASE, max_body_bytes=MAX_BODY, **settings),
                     make_store(backend, tmp_path))
    await app.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=None) as client:
            yield app, client
    finally:
        await app.shutdown()


def patient(values: int) -> dict:
    """A Patient (id p1) holding exactly `values` JSON values, the resource itself included."""
    return {"resourceType": "Patient", "id": "p1", "name": [{"given": ["x"] * (values - 6)}]}


def bundle(kind: str, body: bytes) -> bytes:
    """A batch or transaction Bundle whose one entry PUTs the resource `body` (JSON bytes) at Patient/p1."""
    return (b'{"resourceType":"Bundle","type":"' + kind.encode() + b'","entry":[{"resource":' + body +
            b',"request":{"method":"PUT","url":"Patient/p1"}}]}')


async def write(app: HearthApp, client: httpx.AsyncClient, path: str, body: bytes, tmp_path: Path) -> tuple[int, str]:
    """Write the Patient `body` (JSON bytes, id p1) by `path`: the status (of a Bundle's entry, when the Bundle is
    answered) and what was said."""
    if path == "import":
        source = tmp_path / "import.ndjson"
        source.write_bytes(body + b"\n")
        report = await Loader(app.ctx).load([source])
        return (201, "") if report.resources == 1 else (400, "; ".join(e.message for e in report.errors))
    if path == "POST":
        response = await client.post("/Patient", content=body, headers=FHIR_JSON)
    elif path == "PUT":
        response = await client.put("/Patient/p1", content=body, headers=FHIR_JSON)
    elif path == "conditional create":
        response = await client.post("/Patient", content=body,
                                     headers={**FHIR_JSON, "If-None-Exist": "identifier=http://x|none"})
    elif path == "conditional update":
        response = await client.put("/Patient?identifier=http://x|none", content=body, headers=FHIR_JSON)
    else:
        response = await client.post("/", content=bundle(path, body), headers=FHIR_JSON)
    if response.json()["resourceType"] == "Bundle":  # a batch or transaction response: its entry's answer
        entry = response.json()["entry"][0]["response"]
        return int(entry["status"].split()[0]), json.dumps(entry.get("outcome"))
    return response.status_code, response.text


async def versions(client: httpx.AsyncClient) -> int:
    return (await client.get("/_history")).json()["total"]


# --- the element bound -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", WRITE_PATHS)
async def test_element_bound_on_every_write_path(backend, tmp_path, path):
    async with serving(backend, tmp_path, max_resource_elements=40) as (app, client):
        status, text = await write(app, client, path, json.dumps(patient(41)).encode(), tmp_path)
        assert status == (400 if path == "import" else 413), text
        assert "HEARTH_MAX_RESOURCE_ELEMENTS (40)" in text
        if path != "import":
            assert "too-costly" in text
        assert await versions(client) == 0
        status, text = await write(app, client, path, json.dumps(patient(40)).encode(), tmp_path)
        assert status == 201, text


async def test_element_bound_on_a_patched_result(client):
    """The patch interaction checks its result like any write (at the default bound, 100,000)."""
    assert (await client.put("/Patient/p1", json=patient(10), headers=FHIR_JSON)).status_code == 201
    document = [{"op": "add", "path": "/name/-", "value": {"given": ["y"] * 100_000}}]
    response = await client.patch("/Patient/p1", content=json.dumps(document),
                                  headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code in (413, 422), response.text  # 422: patch.py reports an unusable result as such
    assert "HEARTH_MAX_RESOURCE_ELEMENTS (100000" in response.text and "too-costly" in response.text
    assert (await client.get("/Patient/p1")).json()["meta"]["versionId"] == "1"


# --- the nesting bound -------------------------------------------------------------------------------------------

def nested(levels: int) -> bytes:
    """A Patient whose objects nest `levels` deep (the Patient is level 1), as JSON bytes."""
    inner = b'{"url":"http://example.org/x","valueString":"v"}'
    outer = b'{"url":"http://example.org/x","extension":['
    return (b'{"resourceType":"Patient","id":"p1","extension":[' + outer * (levels - 2) + inner +
            b"]}" * (levels - 2) + b"]}")


async def test_nesting_bound(client):
    """The deepest resource allowed is stored and served every way; a deeper one is refused by every write."""
    assert (await client.put("/Patient/p1", content=nested(MAX_DEPTH), headers=FHIR_JSON)).status_code == 201
    for url in ("/Patient/p1", "/Patient/p1?_format=xml", "/Patient/p1?_pretty=true", "/Patient/p1?_elements=extension",
                "/Patient?_id=p1", "/Patient?_id=p1&_format=xml", "/Patient?_id=p1&_pretty=true&_summary=false",
                "/Patient/p1/_history?_pretty=true"):
        assert (await client.get(url)).status_code == 200, url
    patched = await client.patch("/Patient/p1", json=[{"op": "replace", "path": "/extension/0/url", "value": "http://y"}],
                                 headers={"Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200, patched.text
    xml = (await client.get("/Patient/p1?_format=xml")).content
    assert (await client.put("/Patient/p1", content=xml, headers={"Content-Type": "application/fhir+xml"})).status_code == 200
    assert (await client.post("/", content=bundle("transaction", nested(MAX_DEPTH)), headers=FHIR_JSON)).status_code == 200
    stored = await versions(client)
    for levels in (MAX_DEPTH + 1, 300, 200_000):  # 300: past what orjson writes; 200,000: past what Python parses
        body = nested(levels) if levels < 1000 else b"[" * levels + b"]" * levels
        for response in (await client.post("/Patient", content=body, headers=FHIR_JSON),
                         await client.put("/Patient/p1", content=body, headers=FHIR_JSON),
                         await client.post("/", content=bundle("transaction", body), headers=FHIR_JSON),
                         await client.post("/", content=bundle("batch", body), headers=FHIR_JSON)):
            answer = response.json()
            if answer["resourceType"] == "Bundle":  # a batch: the entry failed
                answer = answer["entry"][0]["response"]["outcome"]
            else:
                assert response.status_code == 400, response.text[-300:]
            assert answer["issue"][0]["code"] == ("structure" if levels > 1000 else "too-costly"), response.text[-300:]
    assert await versions(client) == stored


# --- off the event loop ------------------------------------------------------------------------------------------

def on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Watch:
    """Records, for each step of a write (parse, validate, stamp+serialise+index), whether it ran on the event loop;
    can hold the first large parse on its worker thread until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold: bool = False) -> None:
        self.steps: list[tuple[str, bool]] = []
        self.hold = hold
        self.loop = asyncio.get_running_loop()
        self.parsing = asyncio.Event()  # a large parse has started
        self.release = threading.Event()
        loads = fhir_json.loads

        def parse(data: Any, trusted: bool = False) -> Any:
            if not trusted and len(data) > OFF_LOOP_BYTES:
                self.record("parse")
                if self.hold and not on_the_loop():
                    self.loop.call_soon_threadsafe(self.parsing.set)
                    self.release.wait()
                else:
                    self.parsing.set()
            return loads(data, trusted)
        monkeypatch.setattr(fhir_json, "loads", parse)
        monkeypatch.setattr(resources, "validate_resource", self.recorded("validate", resources.validate_resource))
        monkeypatch.setattr(crud, "version_write", self.recorded("stamp, serialise, index", crud.version_write))
        monkeypatch.setattr(transaction, "version_write", self.recorded("stamp, serialise, index", crud.version_write))

    def record(self, step: str) -> None:
        self.steps.append((step, on_the_loop()))

    def recorded(self, step: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            self.record(step)
            return function(*args)
        return wrapper


def big_patient(size: int) -> bytes:
    """The largest Patient of at most `size` bytes: for 16 MiB, over a million names, two million JSON values."""
    head, item, tail = b'{"resourceType":"Patient","id":"p1","name":[', b'{"family":"x"},', b'{"family":"x"}]}'
    return head + item * ((size - len(head) - len(tail)) // len(item)) + tail


@pytest.mark.parametrize("path", ["POST", "transaction"])
async def test_healthz_answers_while_a_maximum_size_body_is_processed(backend, tmp_path, monkeypatch, path):
    wrapper = len(bundle("transaction", b"")) if path == "transaction" else 0
    body = big_patient(MAX_BODY - wrapper)
    body = bundle("transaction", body) if path == "transaction" else body
    assert MAX_BODY - 16 < len(body) <= MAX_BODY
    async with serving(backend, tmp_path) as (app, client):
        watch = Watch(monkeypatch, hold=True)
        big = asyncio.create_task(client.post("/Patient" if path == "POST" else "/", content=body, headers=FHIR_JSON))
        await watch.parsing.wait()
        try:
            health = await client.get("/healthz")
            assert health.status_code == 200 and not big.done()  # /healthz answered first
        finally:
            watch.release.set()
        response = await big
        assert response.status_code == 413, response.text[:300]
        assert "HEARTH_MAX_RESOURCE_ELEMENTS (100000" in response.text and "too-costly" in response.text
        assert not any(loop for _, loop in watch.steps), watch.steps
        assert await versions(client) == 0


def large_patient() -> bytes:
    """A valid Patient past OFF_LOOP_BYTES (about 25,000 JSON values)."""
    names = [{"family": f"Family-{number:05}-" + "x" * 40, "given": ["Given"]} for number in range(5000)]
    body = json.dumps({"resourceType": "Patient", "id": "p1", "name": names}).encode()
    assert len(body) > OFF_LOOP_BYTES
    return body


@pytest.mark.parametrize("path", WRITE_PATHS)
async def test_large_bodies_are_processed_off_the_loop(backend, tmp_path, monkeypatch, path):
    async with serving(backend, tmp_path) as (app, client):
        watch = Watch(monkeypatch)
        status, text = await write(app, client, path, large_patient(), tmp_path)
        assert status == 201, text
        assert {step for step, _ in watch.steps} == {"parse", "validate", "stamp, serialise, index"}
        assert not any(loop for _, loop in watch.steps), watch.steps
        watch.steps.clear()  # and a small body stays on the loop (a thread hop would cost more than its work)
        response = await client.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2"}, headers=FHIR_JSON)
        assert response.status_code == 201
        assert watch.steps == [("validate", True), ("stamp, serialise, index", True)]


async def test_a_large_batch_moves_only_its_large_entries_off_the_loop(backend, tmp_path, monkeypatch):
    async with serving(backend, tmp_path) as (app, client):
        validated: list[tuple[str, bool]] = []
        validate = resources.validate_resource

        def recording(resource: dict, *limits: int) -> None:
            validated.append((resource["id"], on_the_loop()))
            validate(resource, *limits)
        monkeypatch.setattr(resources, "validate_resource", recording)
        entries = (b'{"resource":' + large_patient() + b',"request":{"method":"PUT","url":"Patient/p1"}},'
                   b'{"resource":{"resourceType":"Patient","id":"p2"},"request":{"method":"PUT","url":"Patient/p2"}}')
        response = await client.post("/", content=b'{"resourceType":"Bundle","type":"batch","entry":[' + entries + b"]}",
                                     headers=FHIR_JSON)
        assert [entry["response"]["status"] for entry in response.json()["entry"]] == ["201 Created"] * 2
        assert sorted(validated) == [("p1", False), ("p2", True)]
