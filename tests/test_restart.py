"""Data written before a restart is there after it (a real `hearth serve` process, stopped and started)."""

from __future__ import annotations

import httpx

from tests.server_process import free_port, start, stop


def test_data_survives_restart_and_kill(tmp_path):
    db, port = tmp_path / "hearth.db", free_port()
    base = f"http://127.0.0.1:{port}"
    server = start(db, port)
    try:
        created = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "female"},
                             headers={"Content-Type": "application/fhir+json"}).json()
        httpx.put(f"{base}/Patient/{created['id']}", json={**created, "gender": "male"},
                  headers={"Content-Type": "application/fhir+json"})
    finally:
        stop(server, hard=False)
    server = start(db, port)
    try:
        read = httpx.get(f"{base}/Patient/{created['id']}")
        assert read.status_code == 200 and read.json()["gender"] == "male"
        assert read.headers["etag"] == 'W/"2"'
        written = httpx.post(f"{base}/Patient", json={"resourceType": "Patient", "gender": "other"},
                             headers={"Content-Type": "application/fhir+json"}).json()
    finally:
        stop(server, hard=True)  # a crash right after the response: a committed write must survive
    server = start(db, port)
    try:
        assert httpx.get(f"{base}/Patient/{written['id']}").json()["gender"] == "other"
        assert httpx.get(f"{base}/_history").json()["total"] == 3
    finally:
        stop(server, hard=False)
