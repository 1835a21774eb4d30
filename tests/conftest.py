"""Fixtures: the app on each storage backend, reached over HTTP in-process (httpx + ASGI)."""

from __future__ import annotations

import bz2
import json
import os
import uuid
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from hearth.server.app import create_app
from hearth.server.settings import Settings

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHEA = SHARED / "testdata" / "synthea-120"
BASE = "http://hearth.test/fhir"
BACKENDS = ["sqlite", "mongo"]


def pytest_configure(config: pytest.Config) -> None:
    """Stop at once, with one message, when the shared test material is not where the tests read it."""
    if not SYNTHEA.is_dir():
        raise pytest.UsageError(
            f"Hearth's tests need the shared test material at {SHARED} (FHIR R4 definitions, Synthea data, "
            "TestScripts: the `shared` folder beside this repository), and it is not there. Put it there "
            "(or a link to it) and run the tests again.")


def make_store(backend: str, tmp_path: Path):
    """A fresh store of `backend`: SQLite on a temp file; MongoDB on mongomock, or a real server when
    HEARTH_TEST_MONGODB_URL is set."""
    if backend == "sqlite":
        from hearth.storage.sqlite.store import SqliteStore
        return SqliteStore(str(tmp_path / "hearth.db"))
    from hearth.storage.mongo.store import MongoStore
    url = os.environ.get("HEARTH_TEST_MONGODB_URL")
    database = f"hearth_test_{uuid.uuid4().hex[:12]}"
    if url:
        from pymongo import AsyncMongoClient
        return MongoStore(AsyncMongoClient(url), database)
    from mongomock_motor import AsyncMongoMockClient
    return MongoStore(AsyncMongoMockClient(), database)


def reopenable(backend: str, tmp_path: Path):
    """A function making a new store on the same database each call, as another process would open it (SQLite:
    the same file; MongoDB: the same database, on one mongomock client)."""
    if backend == "sqlite":
        from hearth.storage.sqlite.store import SqliteStore
        return lambda: SqliteStore(str(tmp_path / "hearth.db"))
    from hearth.storage.mongo.store import MongoStore
    from mongomock_motor import AsyncMongoMockClient
    client, database = AsyncMongoMockClient(), f"hearth_test_{uuid.uuid4().hex[:12]}"
    return lambda: MongoStore(client, database)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def app(backend: str, tmp_path: Path):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, max_body_bytes=1024 * 1024,
                        subscription_allowed_networks="127.0.0.0/8")  # subscription tests' receivers are local
    application = create_app(settings, make_store(backend, tmp_path))
    await application.startup()
    yield application
    await application.shutdown()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as http_client:
        yield http_client


def synthea_bundle(name_prefix: str) -> dict:
    """The first Synthea bundle whose file name starts with `name_prefix`."""
    path = sorted(SYNTHEA.glob(f"{name_prefix}*.json.bz2"))[0]
    return json.loads(bz2.decompress(path.read_bytes()))


FHIR_JSON = {"Content-Type": "application/fhir+json"}
