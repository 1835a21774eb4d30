"""Helpers of the Bulk Data export tests: an app with a quick export worker, kick-off, polling, downloads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson

from conftest import BASE
from hearth.server.app import create_app
from hearth.server.settings import Settings

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def export_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, export_poll=0.02,
                    subscription_allowed_networks="127.0.0.0/8", **overrides)


class Running:
    """An app started on `store`, with an HTTP client on it."""

    def __init__(self, settings: Settings, store: Any) -> None:
        self.app = create_app(settings, store)

    async def __aenter__(self) -> "Running":
        await self.app.startup()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url=BASE)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.aclose()
        await self.app.shutdown()


async def put_all(client: httpx.AsyncClient, resources: list[dict], headers: dict | None = None) -> None:
    for resource in resources:
        response = await client.put(f"/{resource['resourceType']}/{resource['id']}", content=orjson.dumps(resource),
                                    headers={**FHIR_JSON, **(headers or {})})
        assert response.status_code in (200, 201), response.text


async def kick_off(client: httpx.AsyncClient, path: str = "/$export", headers: dict | None = None,
                   **params: str) -> str:
    """The status URL of a new export (asserting the 202)."""
    response = await client.get(path, params=params, headers={**ASYNC, **(headers or {})})
    assert response.status_code == 202, response.text
    return response.headers["content-location"]


async def finished(client: httpx.AsyncClient, status_url: str, headers: dict | None = None,
                   timeout: float = 20.0) -> httpx.Response:
    """The status answer once the export is no longer running (202s checked on the way)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await client.get(status_url, headers=headers or {})
        if response.status_code != 202:
            return response
        assert response.headers["x-progress"] and int(response.headers["retry-after"]) >= 1
        assert asyncio.get_running_loop().time() < deadline, "export did not finish"
        await asyncio.sleep(0.02)


async def manifest(client: httpx.AsyncClient, status_url: str, headers: dict | None = None) -> dict:
    response = await finished(client, status_url, headers)
    assert response.status_code == 200, response.text
    return response.json()


async def download(client: httpx.AsyncClient, manifest_json: dict,
                   headers: dict | None = None) -> dict[str, list[bytes]]:
    """The lines of every output file, by type (in file order)."""
    lines: dict[str, list[bytes]] = {}
    for item in manifest_json["output"]:
        response = await client.get(item["url"], headers={"Accept": "application/fhir+ndjson", **(headers or {})})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        got = response.content.splitlines()
        assert len(got) == item["count"] and response.content.endswith(b"\n")
        lines.setdefault(item["type"], []).extend(got)
    return lines


def ids(lines: list[bytes]) -> list[str]:
    return [orjson.loads(line)["id"] for line in lines]
