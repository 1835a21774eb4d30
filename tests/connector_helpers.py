"""Shared pieces of the connectors' tests: a Hearth (either backend) to sync into, a fake upstream EHR
(tests/fake_ehr.py), and a connectors file written from keyword arguments."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import BASE, make_store
from fake_ehr import FakeEhr
from hearth.connectors.runner import Connectors
from hearth.server.app import create_app
from hearth.server.settings import Settings
from hearth.server.wiring import open_connectors

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def toml(connectors: dict[str, dict[str, Any]]) -> str:
    """A connectors file (only the value shapes connectors use: strings, numbers, booleans, lists, one table)."""
    lines = []
    for name, table in connectors.items():
        lines.append(f"[connectors.{name}]")
        tables = {key: value for key, value in table.items() if isinstance(value, dict)}
        for key, value in table.items():
            if key not in tables:
                lines.append(f"{key} = {_value(value)}")
        for key, sub in tables.items():
            lines.append(f"[connectors.{name}.{key}]")
            lines += [f"{k} = {_value(v)}" for k, v in sub.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class World:
    """A started Hearth (`client` talks to it), a fake EHR, and the connectors made for them."""

    def __init__(self, app: Any, client: httpx.AsyncClient, ehr: FakeEhr, folder: Path) -> None:
        self.app, self.client, self.ehr, self.folder = app, client, ehr, folder
        self.made: list[Connectors] = []

    async def connectors(self, **declared: dict[str, Any]) -> Connectors:
        """Connectors as a TOML file declares them (`base` defaults to the fake EHR's), not started: tests run
        their passes with `run_once`."""
        for table in declared.values():
            table.setdefault("base", self.ehr.base)
            table.setdefault("retries", 3)
            table.setdefault("timeout", 2)
        path = self.folder / f"connectors-{len(self.made)}.toml"
        path.write_text(toml(declared))
        connectors = await open_connectors(self.app.ctx, replace(self.app.settings, connectors=str(path)))
        assert connectors is not None
        for connector in connectors.connectors.values():  # retries and probes in tests: milliseconds, not seconds
            connector.upstream.sleep = _short_sleep
        self.made.append(connectors)
        return connectors

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def resources(self, resource_type: str) -> list[dict[str, Any]]:
        found = await self.client.get(f"/{resource_type}", params={"_count": "1000"})
        assert found.status_code == 200, found.text
        return [entry["resource"] for entry in found.json().get("entry", [])]


async def _short_sleep(seconds: float) -> None:
    import asyncio
    await asyncio.sleep(min(seconds, 0.01))


@pytest.fixture
async def world(backend: str, tmp_path: Path):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE,
                        subscription_allowed_networks="127.0.0.0/8", subscription_retry_base=0.05)
    app = create_app(settings, make_store(backend, tmp_path))
    await app.startup()
    ehr = FakeEhr(page_size=5)
    await ehr.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        made = World(app, client, ehr, tmp_path)
        yield made
        for connectors in made.made:
            await connectors.stop()
    await ehr.stop()
    await app.shutdown()


def patient(resource_id: str, family: str = "Doe", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": resource_id, "name": [{"family": family}], **extra}


def observation(resource_id: str, subject: str, value: str = "72.50", **extra: Any) -> dict[str, Any]:
    from decimal import Decimal
    return {"resourceType": "Observation", "id": resource_id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": subject}, "valueQuantity": {"value": Decimal(value), "unit": "/min"}, **extra}
