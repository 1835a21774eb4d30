"""A real Hearth as the upstream: a `hearth serve` process loaded with Synthea data (`hearth import`), synced by
polling, or by Bulk Data export from Hearth's own `$export`, into an empty Hearth until both hold the same
resources, then kept in step with a change."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from connector_helpers import world  # noqa: F401 (fixture)
from server_process import free_port, start, stop

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"
BUNDLES = ["0-hospitalInformation1625911868739.json.bz2", "0-practitionerInformation1625911868739.json.bz2",
           "8a4c9c04-1524-9f1c-d65b-9b17e4520fef.json.bz2"]  # the smallest patient record


def _upstream_counts(base: str, types: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for resource_type in types:
        found = httpx.get(f"{base}/{resource_type}", params={"_summary": "count"}).json()
        counts[resource_type] = found["total"]
    return counts


@pytest.mark.parametrize("kind", ["fhir-poll", "bulk-export"])
async def test_a_hearth_upstream_is_synced_until_both_hold_the_same_resources(world, tmp_path, kind):
    db = tmp_path / "upstream.db"
    subprocess.run([sys.executable, "-m", "hearth.server.cli", "import", *(str(SYNTHEA / name) for name in BUNDLES),
                    "--storage", str(db)], check=True, capture_output=True)
    port = free_port()
    upstream = start(db, port, base_url=f"http://127.0.0.1:{port}")
    try:
        base = f"http://127.0.0.1:{port}"
        everything = httpx.get(f"{base}/", params={"_count": "1000", "_elements": "id"}).json()
        types = sorted({entry["resource"]["resourceType"] for entry in everything["entry"]})
        expected = _upstream_counts(base, types)
        how = {"page_size": 50} if kind == "fhir-poll" else {}
        connectors = await world.connectors(synthea={"kind": kind, "types": types, "base": base, **how})
        status = await connectors.run_once("synthea")
        assert status["state"] == "ok", status
        assert status["counters"]["rejected"] == 0 and status["counters"]["stored"] == sum(expected.values())
        for resource_type in types:
            local = (await world.get(f"/{resource_type}", _summary="count")).json()["total"]
            assert local == expected[resource_type], resource_type
        [patient] = httpx.get(f"{base}/Patient").json()["entry"]
        upstream_patient = patient["resource"]
        mine = (await world.get(f"/Patient/synthea.{upstream_patient['id']}")).json()
        assert {k: v for k, v in mine.items() if k not in ("id", "meta")} == \
            {k: v for k, v in upstream_patient.items() if k not in ("id", "meta")}
        observation = (await world.get("/Observation", _count="1")).json()["entry"][0]["resource"]
        assert observation["subject"]["reference"] == f"Patient/synthea.{upstream_patient['id']}"

        upstream_patient["gender"] = "other" if upstream_patient.get("gender") != "other" else "unknown"
        httpx.put(f"{base}/Patient/{upstream_patient['id']}", json=upstream_patient,
                  headers={"Content-Type": "application/fhir+json"}).raise_for_status()
        status = await connectors.run_once("synthea")
        assert status["counters"]["stored"] == sum(expected.values()) + 1
        mine = (await world.get(f"/Patient/synthea.{upstream_patient['id']}")).json()
        assert mine["gender"] == upstream_patient["gender"] and mine["meta"]["versionId"] == "2"
    finally:
        stop(upstream, hard=False)
