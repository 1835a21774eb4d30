"""A connector through everything an upstream throws: 429 with both Retry-After forms, 5xx bursts, timeouts,
connection resets, bodies that are not JSON, an upstream down long enough to open its circuit (other connectors
carry on), tokens that expire mid-run, SMART Backend Services with private_key_jwt; nothing lost, nothing
duplicated, the checkpoint never past what is stored."""

from __future__ import annotations

import asyncio
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector_helpers import patient, world  # noqa: F401 (fixture)
from fake_ehr import FakeEhr
from hearth.storage.base import LeaseLost


def _seed(ehr: FakeEhr, count: int = 12) -> None:
    for n in range(count):
        ehr.put(patient(f"p{n}"), last_updated=f"2026-01-01T00:00:{n:02d}.000000Z")


async def _all_once(world, count: int = 12) -> None:
    stored = await world.resources("Patient")
    assert sorted(p["id"] for p in stored) == sorted(f"ehr.p{n}" for n in range(count))
    assert all(p["meta"]["versionId"] == "1" for p in stored)


async def test_429_retry_after_in_seconds_and_as_a_date_is_honoured(world):
    _seed(world.ehr)
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    connectors.get("ehr").upstream.sleep = asyncio.sleep  # really wait, to see the wait in the request times
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=5), usegmt=True)
    world.ehr.fail(503, retry_after=when, path_contains="_getpages")
    world.ehr.fail(429, retry_after="1", path_contains="_getpages")
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    pages = [r for r in world.ehr.requests if "_getpages" in str(r.query)]
    assert pages[1].time - pages[0].time >= 1.0  # an HTTP date 4-5 s ahead of the start (more than any backoff)
    assert pages[2].time - pages[1].time >= 0.9  # Retry-After: 1
    await _all_once(world)


async def test_bursts_of_5xx_timeouts_resets_and_malformed_bodies_are_retried(world):
    _seed(world.ehr)
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "timeout": 0.5})
    world.ehr.fail(500, times=2)
    world.ehr.stall(2.0, path_contains="_getpages")
    world.ehr.reset(2, path_contains="_getpages")  # aiohttp itself re-sends a GET once after a reset
    world.ehr.malformed(path_contains="_getpages")
    world.ehr.fail(502, path_contains="_getpages")
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok", status
    await _all_once(world)


async def test_a_pass_that_runs_out_of_retries_fails_without_moving_past_what_is_stored(world):
    _seed(world.ehr)
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    world.ehr.fail(503, times=4, path_contains="_getpages")  # the first page is stored, then 4 failures (3 retries)
    status = await connectors.run_once("ehr")
    assert status["state"] == "failing" and "503" in status["last_error"]["message"]
    checkpoint = status["checkpoint"]["types"]["Patient"]
    assert checkpoint < "2026-01-01T00:00:04"  # at most below the first page's last instant
    assert len(await world.resources("Patient")) == 5
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok" and status["last_success"] > status["last_error"]["time"]
    await _all_once(world)


async def test_an_upstream_that_keeps_failing_opens_its_circuit_and_others_carry_on(world):
    healthy = FakeEhr()
    await healthy.start()
    try:
        healthy.put(patient("h1"))
        world.ehr.put(patient("p1"))
        connectors = await world.connectors(
            ehr={"kind": "fhir-poll", "types": ["Patient"], "retries": 6},
            other={"kind": "fhir-poll", "types": ["Patient"], "base": healthy.base})
        world.ehr.fail(503, times=100)
        status = await connectors.run_once("ehr")
        assert status["state"] == "failing" and status["circuit"] == "open"
        assert "circuit open" in status["last_error"]["message"]
        sent = len(world.ehr.requests)
        assert sent == 5  # the threshold: after it nothing more was sent
        assert (await connectors.run_once("ehr"))["state"] == "failing"
        assert len(world.ehr.requests) == sent  # while open, the upstream is not asked at all
        assert (await connectors.run_once("other"))["state"] == "ok"
        assert (await world.get("/Patient/other.h1")).status_code == 200
        assert (await world.get("/Patient/ehr.p1")).status_code == 404  # Hearth serves what it has meanwhile
        circuit = connectors.get("ehr").circuit
        circuit.opened_at -= circuit.cooldown  # the cool-down is over: one probe goes
        world.ehr.requests.clear()
        del world.ehr._faults[:]  # the upstream is back
        status = await connectors.run_once("ehr")
        assert status["state"] == "ok" and status["circuit"] == "closed", status
        assert (await world.get("/Patient/ehr.p1")).status_code == 200
    finally:
        await healthy.stop()


async def test_a_token_that_expires_mid_run_is_renewed_once(world):
    ehr = FakeEhr(page_size=5, require_token=True, clients={"hearth": "s3cret"})
    await ehr.start()
    try:
        _seed(ehr)
        ehr.on_page = lambda page: ehr.expire_tokens() if page == 1 else None
        connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base,
                                                 "auth": {"kind": "client-secret", "client_id": "hearth",
                                                          "secret": "s3cret"}})
        status = await connectors.run_once("ehr")
        assert status["state"] == "ok", status
        assert len([r for r in ehr.requests if r.path == "/auth/token"]) == 2
        await _all_once(world)
        bad = await world.connectors(bad={"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base,
                                          "auth": {"kind": "client-secret", "client_id": "hearth",
                                                   "secret": "wrong"}})
        status = await bad.run_once("bad")
        assert status["state"] == "failing" and "token endpoint" in status["last_error"]["message"]
    finally:
        await ehr.stop()


async def test_backend_services_with_a_private_key_jwt(world, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "key.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    public = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    public.update({"kid": "k1", "alg": "RS384"})
    ehr = FakeEhr(page_size=5, require_token=True, jwks={"hearth": {"keys": [public]}})
    await ehr.start()
    try:
        _seed(ehr)
        connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "base": ehr.base,
                                                 "auth": {"kind": "backend-services", "client_id": "hearth",
                                                          "key_file": str(pem), "key_id": "k1"}})
        status = await connectors.run_once("ehr")
        assert status["state"] == "ok", status
        await _all_once(world)
    finally:
        await ehr.stop()


async def test_the_rate_limit_spaces_requests(world):
    _seed(world.ehr, 30)  # pages of 5: 6 pages, and the history request for deletions
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"], "rate": 4})
    status = await connectors.run_once("ehr")
    assert status["state"] == "ok"
    times = [r.time for r in world.ehr.requests]
    assert len(times) >= 7 and times[-1] - times[0] >= (len(times) - 4) / 4 - 0.05  # 4 at once, then 4 per second


async def test_a_probe_cut_short_does_not_leave_the_circuit_half_open_for_good(world):
    """Two types share the upstream: when the circuit half-opens, one takes the probe, the other fails the pass at
    once and the probe is cancelled with it; the next pass must be able to probe again."""
    world.ehr.put(patient("p1"))
    connectors = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient", "Observation"]})
    world.ehr.fail(503, times=12)
    assert (await connectors.run_once("ehr"))["circuit"] == "open"
    del world.ehr._faults[:]  # the upstream is back
    circuit = connectors.get("ehr").circuit
    for _ in range(3):
        circuit.opened_at = min(circuit.opened_at, circuit.clock() - circuit.cooldown)  # the cool-down is over
        status = await connectors.run_once("ehr")
        if status["state"] == "ok":
            break
    assert status["state"] == "ok" and status["circuit"] == "closed", status
    assert (await world.get("/Patient/ehr.p1")).status_code == 200


async def test_a_pass_that_lost_its_lease_cannot_move_the_checkpoint(world):
    """Two processes' connectors on one store (`hearth serve` and `hearth connector run --once`): while one holds the
    connector's lease the other's pass is refused; once the first has paused past its lease and the other has run,
    the first's checkpoint is refused (fenced by the lease's token) and the other's stands."""
    world.ehr.put(patient("p1"))
    paused = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    other = await world.connectors(ehr={"kind": "fhir-poll", "types": ["Patient"]})
    first = paused.get("ehr").state
    assert await first.lease(seconds=0.2)
    assert await other.run_once("ehr") is None  # refused: the lease is held
    assert (await other.get("ehr").status())["running_in"] == first.owner
    await asyncio.sleep(0.3)  # the first pauses past its lease
    status = await other.run_once("ehr")
    assert status["state"] == "ok" and status["counters"]["stored"] == 1
    with pytest.raises(LeaseLost):
        await first.save_checkpoint({"types": {"Patient": "1999-01-01T00:00:00.000000Z"}})
    assert await other.get("ehr").state.checkpoint() == status["checkpoint"]
    assert status["checkpoint"]  # the pass saved one
