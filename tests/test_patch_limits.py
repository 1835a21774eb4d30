"""PATCH within the limits: each operation is measured before it runs, so a patch that would grow the resource
past HEARTH_MAX_RESOURCE_ELEMENTS or HEARTH_MAX_BODY_BYTES stops there (422, nothing written); big patches and
patches of big resources are applied on a worker thread."""

from __future__ import annotations

import asyncio
import copy
import re

import pytest

from hearth.capability.outcome import FhirError
from conftest import FHIR_JSON
from hearth.interactions.limits import Limits
from hearth.interactions.patch import compile_patch
from hearth.interactions.patch_budget import Budget

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
DOUBLE_NAME = {"op": "copy", "from": "/name", "path": "/name/-"}


async def make(client, **fields) -> dict:
    response = await client.post("/Patient", json={"resourceType": "Patient", **fields}, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


def apply(resource: dict, document, content_type: str, limits: Limits) -> dict:
    resource = copy.deepcopy(resource)
    return compile_patch(document, content_type).apply(resource, Budget.of(resource, limits, "Patient/1"))


async def test_a_doubling_json_patch_stops_at_the_element_limit(client):
    created = await make(client, name=[{"family": "Chalmers", "given": ["Peter"]}])
    response = await client.patch(f"/Patient/{created['id']}", json=[DOUBLE_NAME] * 21, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "too-costly" and "HEARTH_MAX_RESOURCE_ELEMENTS (100000" in issue["diagnostics"]
    # refused before the operation that passes the limit: 2^15 copies of 5 values is past 100,000
    assert int(re.search(r"operation (\d+)", issue["diagnostics"]).group(1)) <= 15
    assert (await client.get(f"/Patient/{created['id']}")).json() == created


async def test_a_patch_growing_past_the_body_limit_is_refused(client):
    """The app under test takes bodies up to 1 MiB: four copies of a 300 kB name are more."""
    created = await make(client, name=[{"text": "x" * 300_000}])
    response = await client.patch(f"/Patient/{created['id']}", headers=JSON_PATCH,
                                  json=[{"op": "copy", "from": "/name/0", "path": "/name/-"}] * 3)
    assert response.status_code == 422, response.text
    assert "HEARTH_MAX_BODY_BYTES (1048576 bytes)" in response.json()["issue"][0]["diagnostics"]
    assert (await client.get(f"/Patient/{created['id']}")).json() == created


def test_every_format_is_bounded_while_it_applies():
    limits = Limits(max_resource_elements=60)
    patient = {"resourceType": "Patient", "id": "1"}
    many = [{"system": "phone", "value": str(n)} for n in range(20)]  # 60 values, 3 for each
    fhirpath = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "add"}, {"name": "path", "valueString": "Patient"},
        {"name": "name", "valueString": "telecom"}, {"name": "value", "valueContactPoint": item}]} for item in many]}
    cases = [(fhirpath, "application/fhir+json", "FHIRPath Patch operation 18 (add Patient)"),
             ({"telecom": many}, "application/merge-patch+json", "JSON Merge Patch member Patient.telecom"),
             ([{"op": "add", "path": "/telecom", "value": many}], "application/json-patch+json",
              "JSON Patch operation 0 (add /telecom)")]
    for document, content_type, refused in cases:
        with pytest.raises(FhirError) as error:
            apply(patient, document, content_type, limits)
        assert error.value.status == 422 and error.value.diagnostics.startswith(refused), error.value.diagnostics
        assert "HEARTH_MAX_RESOURCE_ELEMENTS (60 JSON values)" in error.value.diagnostics
    assert len(apply(patient, {"telecom": many[:10]}, "application/merge-patch+json", limits)["telecom"]) == 10


def test_what_a_patch_removes_makes_room_but_what_it_adds_is_bounded_in_all():
    limits = Limits(max_resource_elements=200)
    patient = {"resourceType": "Patient", "id": "1", "name": [{"given": ["x"] * 60}]}  # 66 values
    shrink_then_grow = [{"op": "remove", "path": "/name"},
                        {"op": "add", "path": "/name", "value": [{"given": ["y"] * 150}]}]
    assert len(apply(patient, shrink_then_grow, "application/json-patch+json", limits)["name"][0]["given"]) == 150
    cycles = [{"op": "copy", "from": "/name", "path": "/contact"}, {"op": "remove", "path": "/contact"}] * 10
    with pytest.raises(FhirError) as error:
        apply(patient, cycles, "application/json-patch+json", limits)
    assert error.value.diagnostics.startswith("JSON Patch operation 6 (copy /name -> /contact) would make the "
                                              "patch add more than HEARTH_MAX_RESOURCE_ELEMENTS (200 JSON values)")


async def test_big_patches_and_patches_of_big_resources_run_on_a_worker_thread(client, monkeypatch):
    on_threads: list[str] = []
    to_thread = asyncio.to_thread

    async def recording(function, *args, **kwargs):
        on_threads.append(function.__name__)
        return await to_thread(function, *args, **kwargs)
    monkeypatch.setattr(asyncio, "to_thread", recording)
    big = await make(client, name=[{"text": "x" * 300_000}])
    response = await client.patch(f"/Patient/{big['id']}", json=[{"op": "add", "path": "/active", "value": True}],
                                  headers=JSON_PATCH)
    assert response.status_code == 200 and on_threads.count("patched") == 1, (response.text, on_threads)
    small = await make(client, active=True)
    response = await client.patch(f"/Patient/{small['id']}", headers=JSON_PATCH,
                                  json=[{"op": "add", "path": "/name", "value": [{"text": "y" * 300_000}]}])
    assert response.status_code == 200, response.text
    assert on_threads.count("compile_patch") == 1 and on_threads.count("patched") == 2
