"""Shared pieces of the HL7 v2 connector's tests: a started Hearth (either backend) with an `hl7v2-mllp` connector
listening on a free port, a small MLLP client, and readers for ACKs and for what was stored."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest

from conftest import BASE, SHARED, make_store
from connector_helpers import toml
from hearth.connectors.hl7v2.connector import Hl7Connector
from hearth.connectors.hl7v2.mllp import send, send_raw
from hearth.connectors.runner import Connectors
from hearth.server.app import create_app
from hearth.server.settings import Settings
from hearth.server.wiring import open_connectors

HL7V2 = SHARED / "testdata" / "hl7v2"
EDGE = HL7V2 / "edge-cases"
HOST = "127.0.0.1"


def edge(name: str) -> bytes:
    return (EDGE / name).read_bytes()


def sample(name: str, control_id: str | None = None, ack: bool = True) -> bytes:
    """A sample message; with `control_id`, MSH-10 replaced (the samples share control ids); `ack` False keeps
    MSH-15/16, else they are emptied (original mode, one answer per message)."""
    raw = (HL7V2 / name).read_bytes()
    if control_id is None and ack:
        return raw
    text = raw.decode("latin-1")
    bom = text.startswith("\ufeff") or text.startswith("ï»¿")
    body = text[3:] if bom else text
    lines = re.split(r"(\r\n|\n|\r)", body, maxsplit=1)
    fields = lines[0].split("|")
    fields += [""] * (17 - len(fields))
    if control_id is not None:
        fields[9] = control_id
    if ack:
        fields[14] = fields[15] = ""
    head = "|".join(fields).rstrip("|")
    return ((text[:3] if bom else "") + head + "".join(lines[1:])).encode("latin-1")


def acks(payload: bytes) -> list[dict[str, str]]:
    """MSA-1, MSA-2, ERR-2 and ERR-3.1 of each ACK in an answer (one ACK or a batch of them); for versions
    before 2.5, the same read from ERR-1 (location, then the code in its fifth component)."""
    text = payload.decode("latin-1")
    fs, cs, sc = text[3], text[4], text[7]
    found: list[dict[str, str]] = []
    for segment in filter(None, text.split("\r")):
        fields = segment.split(fs) + [""] * 4
        if fields[0] == "MSA":
            found.append({"msa1": fields[1], "msa2": fields[2]})
        elif fields[0] == "ERR" and (fields[2] or fields[3]):
            found[-1].update(err2=fields[2], err3=fields[3].split(cs)[0])
        elif fields[0] == "ERR":
            parts = fields[1].split(cs) + [""] * 5
            found[-1].update(err2=cs.join(p for p in parts[:3] if p), err3=parts[4].split(sc)[0])
    return found


class Feed:
    """A started Hearth with HL7 v2 connectors; `client` talks FHIR to it over ASGI."""

    def __init__(self, app: Any, client: httpx.AsyncClient, folder: Path) -> None:
        self.app, self.client, self.folder = app, client, folder
        self.made: list[Connectors] = []
        self.connector: Hl7Connector | None = None

    async def start(self, name: str = "adt", **table: Any) -> Hl7Connector:
        """Declare and start one connector (port 0 by default); returns once it listens."""
        table = {"kind": "hl7v2-mllp", "port": 0, "read_timeout": "2s", **table}
        path = self.folder / f"connectors-{len(self.made)}.toml"
        path.write_text(toml({name: table}))
        connectors = await open_connectors(self.app.ctx, replace(self.app.settings, connectors=str(path)))
        assert connectors is not None
        self.made.append(connectors)
        connectors.start()
        connector = connectors.get(name)
        assert isinstance(connector, Hl7Connector)
        deadline = time.monotonic() + 10
        while connector.listener is None:
            assert time.monotonic() < deadline, "the connector did not start listening"
            await asyncio.sleep(0.01)
        self.connector = connector
        return connector

    @property
    def port(self) -> int:
        assert self.connector is not None and self.connector.listener is not None
        return self.connector.listener.port

    async def send(self, *payloads: bytes, timeout: float = 10.0) -> list[bytes]:
        return await send(HOST, self.port, payloads, timeout)

    async def send_raw(self, wire: bytes, expect: int, timeout: float = 10.0) -> list[bytes]:
        return await send_raw(HOST, self.port, wire, expect, timeout)

    async def converged(self, timeout: float = 20.0) -> None:
        """Wait until the inbox holds nothing pending."""
        assert self.connector is not None
        deadline = time.monotonic() + timeout
        while (await self.connector.inbox.counts(self.connector.config.name))[0]:
            assert time.monotonic() < deadline, "messages are still pending"
            await asyncio.sleep(0.02)

    async def find(self, resource_type: str, **params: str) -> list[dict[str, Any]]:
        found = await self.client.get(f"/{resource_type}", params={"_count": "200", **params})
        assert found.status_code == 200, found.text
        return [entry["resource"] for entry in found.json().get("entry", [])
                if entry.get("search", {}).get("mode", "match") == "match"]

    async def one(self, resource_type: str, **params: str) -> dict[str, Any]:
        found = await self.find(resource_type, **params)
        assert len(found) == 1, f"{len(found)} {resource_type} for {params}"
        return found[0]

    async def dead_letters(self) -> list[dict[str, Any]]:
        assert self.connector is not None
        return await self.connector.state.dead_letters()


@pytest.fixture
async def feed(backend: str, tmp_path: Path) -> AsyncIterator[Feed]:
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE)
    app = create_app(settings, make_store(backend, tmp_path))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        made = Feed(app, client, tmp_path)
        yield made
        for connectors in made.made:
            await connectors.stop()
    await app.shutdown()


