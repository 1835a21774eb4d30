"""Data written before a restart is there after it (a real `hearth serve`, one process or a `--workers 2` group,
stopped and started, or killed)."""

from __future__ import annotations

import httpx
import pytest

from tests.server_process import free_port, kill_group, start, stop


@pytest.mark.parametrize("workers", ["1", "2"])
def test_data_survives_restart_and_kill(tmp_path, workers):
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(db, port, workers=workers)
    try:
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "female"},
                             headers={"Content-Type": "application/fhir+json"}).json()
        httpx.put(f"{base}/Patient/{created['id']}", json={**created, "gender": "male"},
                  headers={"Content-Type": "application/fhir+json"})
    finally:
        stop(server, hard=False)
    server = start(db, port, workers=workers)
    try:
        read = httpx.get(f"{base}/Patient/{created['id']}")
        assert read.status_code == 200 and read.json()["gender"] == "male"
        assert read.headers["etag"] == 'W/"2"'
        written = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "other"},
                             headers={"Content-Type": "application/fhir+json"}).json()
    finally:
        kill_group(server)  # a crash right after the response: a committed write must survive
    server = start(db, port, workers=workers)
    try:
        assert httpx.get(f"{base}/Patient/{written['id']}").json()["gender"] == "other"
        assert httpx.get(f"{base}/_history").json()["total"] == 3
    finally:
        stop(server, hard=False)
