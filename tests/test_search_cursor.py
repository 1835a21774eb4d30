"""Paging cursors are signed with a secret of the database: valid across a restart, refused (400) when signed with
any other key (the old constant one, another database's); and a cursor whose signature holds but whose values no
backend could bind (the key may leak) is a 400, never a 500. (A cursor of another search: test_search_contract.py.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from urllib.parse import urlencode

import httpx
import orjson
import pytest

from hearth.capability.outcome import FhirError
from conftest import BASE, FHIR_JSON, make_store
from hearth.search.ir import Keyset
from hearth.search.paging import decode, encode
from hearth.server.app import create_app
from hearth.server.settings import Settings


def sign(key: bytes, payload: list) -> str:
    """A cursor holding `payload` ([search, values, direction]), signed as search/paging.py signs them."""
    body = json.dumps(payload, separators=(",", ":")).encode()  # (orjson refuses integers past 64 bits)
    return base64.urlsafe_b64encode(hmac.new(key, body, hashlib.sha256).digest()[:8] + body).rstrip(b"=").decode()


def payload(cursor: str) -> list:
    return orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))[8:])


async def opened(backend: str, tmp_path, store=None):
    store = store or make_store(backend, tmp_path)
    app = create_app(Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE), store)
    await app.startup()
    return app, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def next_link(bundle: dict) -> str:
    return next(link["url"] for link in bundle["link"] if link["relation"] == "next").removeprefix(BASE)


def same_database(backend: str, store, tmp_path):
    """Another store on `store`'s database (a restart, or a second Hearth process)."""
    if backend == "sqlite":
        from hearth.storage.sqlite.store import SqliteStore
        return SqliteStore(str(tmp_path / "hearth.db"))
    from hearth.storage.mongo.store import MongoStore
    return MongoStore(store.client, store.db.name)


async def test_cursors_hold_across_a_restart_and_nowhere_else(backend, tmp_path):
    app, client = await opened(backend, tmp_path)
    for n in range(5):
        await client.put(f"/Patient/p{n}", json={"resourceType": "Patient", "id": f"p{n}"}, headers=FHIR_JSON)
    first = (await client.get("/Patient?_count=2&_sort=_id")).json()
    url = next_link(first)
    cursor = dict(httpx.URL(url).params)["_cursor"]
    store = app.ctx.store
    await client.aclose()
    await app.shutdown()

    again, client = await opened(backend, tmp_path, same_database(backend, store, tmp_path))
    try:
        second = await client.get(url)
        assert second.status_code == 200 and [e["resource"]["id"] for e in second.json()["entry"]] == ["p2", "p3"]
        old_key = sign(b"hearth-cursor-v1", payload(cursor))  # what any client could sign before
        for forged in (old_key, cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB")):
            response = await client.get("/Patient", params={"_count": "2", "_sort": "_id", "_cursor": forged})
            assert response.status_code == 400 and response.json()["issue"][0]["expression"] == ["_cursor"]
    finally:
        await client.aclose()
        await again.shutdown()

    other, client = await opened(backend, tmp_path / "other")
    try:  # another database: its own key
        response = await client.get("/Patient", params={"_count": "2", "_sort": "_id", "_cursor": cursor})
        assert response.status_code == 400
    finally:
        await client.aclose()
        await other.shutdown()


UNBINDABLE = [[[2 ** 63]], [[2 ** 64 - 1]], [["x" * 70_000]], [[1] * 101], [[[1]]], [[{"a": 1}]], [[], "sideways"],
              [5], [[], "next", "extra"]]  # [values, direction] after the search's name


async def test_signed_cursors_with_values_no_backend_binds_are_400(backend, tmp_path):
    app, client = await opened(backend, tmp_path)
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # (a 70,000-character value is past a URL's length)
    try:
        for n in (1, 2):
            await client.put(f"/Patient/p{n}", json={"resourceType": "Patient", "id": f"p{n}"}, headers=FHIR_JSON)
        key = await app.ctx.store.cursor_key()
        for sort in ("_id", "-_lastUpdated,_id", "birthdate"):
            real = payload(dict(httpx.URL(next_link((await client.get(f"/Patient?_count=1&_sort={sort}")).json()))
                                .params)["_cursor"])  # [this search, values, direction]
            for forged in UNBINDABLE:
                cursor = sign(key, [real[0], *forged])
                response = await client.post("/Patient/_search", headers=form,
                                             content=urlencode({"_sort": sort, "_cursor": cursor}))
                assert response.status_code == 400, (str(forged)[:40], response.text[:300])
        # integers past 64 bits read as doubles (orjson's way), which bind; the largest 64-bit integer binds as it is
        real = payload(dict(httpx.URL(next_link((await client.get("/Patient?_count=1")).json())).params)["_cursor"])
        for value in (2 ** 64, -2 ** 63 - 1, 10 ** 30, 2 ** 63 - 1):
            values = [value, *real[1][1:]]  # in place of the creation key
            response = await client.get("/Patient", params={"_count": "1",
                                                            "_cursor": sign(key, [real[0], values, "next"])})
            assert response.status_code == 200, response.text[:300]
    finally:
        await client.aclose()
        await app.shutdown()


def test_decode_checks_the_key_the_search_and_the_values():
    cursor = encode(Keyset(("a", 1, 2.5, None, True), "prev"), "s1", key=b"k1")
    assert decode(cursor, "s1", key=b"k1") == Keyset(("a", 1, 2.5, None, True), "prev")
    for key, search, forged in [(b"k2", "s1", cursor), (b"k1", "s2", cursor),
                                *((b"k1", "s1", sign(b"k1", ["s1", *values])) for values in UNBINDABLE)]:
        with pytest.raises(FhirError) as refused:
            decode(forged, search, key=key)
        assert refused.value.status == 400
