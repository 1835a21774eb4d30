"""Rest-hook endpoints cannot make Hearth call into its own machine or network, nor itself (SSRF), on both backends:
refused at create (422) in every spelling, and at send time on the address actually connected to."""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp.abc import AbstractResolver

from conftest import BASE, FHIR_JSON, make_store
from subscription_helpers import Receiver, r4_subscription
from hearth.subscriptions.channels import Channel, DeliveryFailed, Outgoing, send
from hearth.subscriptions.egress import EgressPolicy
from test_subscriptions import receiver, settings_for, subscribe  # noqa: F401 (fixture)
from test_subscriptions_backport import wait_status
from test_subscriptions_delivery import Running

REFUSED = [
    "http://127.0.0.1:9/hook", "http://127.0.0.1./hook", "http://127.1/hook", "http://2130706433/hook",
    "http://0x7f.1/hook", "http://0x7f000001/hook", "http://017700000001/hook", "http://localhost:9/hook",
    "http://[::1]:9/hook", "http://[::ffff:127.0.0.1]/hook", "http://[::ffff:7f00:1]/hook",
    "http://[64:ff9b::7f00:1]/hook", "http://[2002:7f00:1::]/hook", "http://[::127.0.0.1]/hook",  # NAT64, 6to4, compat
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/hook", "http://10.1.2.3/hook",
    "http://172.16.0.1/hook", "http://192.168.1.1/hook", "http://[fc00::1]/hook", "http://[fd12:3456::1]/hook",
    "http://100.64.0.1/hook", "http://224.0.0.1/hook", "http://[ff02::1]/hook", "http://0.0.0.0/hook",
    "http://0/hook", "http://[::]/hook", "http://255.255.255.255/hook", "http://240.0.0.1/hook",
    "http://[::ffff:10.0.0.1]/hook", "http://[::ffff:169.254.169.254]/hook", "http://①②⑦.0.0.1/hook",
]


def running(backend: str, tmp_path: Path, resolver: type[AbstractResolver] | None = None, **settings) -> Running:
    """An app with no allowed networks unless `settings` name some; `resolver` replaces the system's."""
    started = Running(settings_for(tmp_path, **{"subscription_allowed_networks": "", **settings}),
                      make_store(backend, tmp_path))
    if resolver is not None:
        config = started.app.subscriptions.config
        started.app.subscriptions.config = replace(config, resolver=resolver)
    return started


async def refused(client: httpx.AsyncClient, endpoint: str, payload: str | None = None) -> str:
    """The diagnostics of the 422 a Subscription to `endpoint` gets; nothing is stored."""
    response = await client.post("/Subscription", json=r4_subscription("Patient?gender=male", endpoint,
                                                                       payload=payload), headers=FHIR_JSON)
    assert response.status_code == 422, (endpoint, response.text)
    [issue] = response.json()["issue"]
    assert issue["expression"] == ["Subscription.channel.endpoint"]
    assert (await client.get("/Subscription")).json()["total"] == 0
    return issue["diagnostics"]


async def test_private_loopback_and_special_addresses_are_refused_in_every_spelling(backend, tmp_path):
    async with running(backend, tmp_path) as client:
        for endpoint in REFUSED:
            assert "HEARTH_SUBSCRIPTION_ALLOWED_NETWORKS" in await refused(client, endpoint), endpoint
        # a public address, and a name that does not resolve now (the check at send time guards it), are accepted
        for endpoint in ("http://93.184.215.14:9/hook", "https://hooks.invalid/hook"):
            response = await client.post("/Subscription", json=r4_subscription("Patient?gender=male", endpoint),
                                         headers=FHIR_JSON)
            assert response.status_code == 201, (endpoint, response.text)


async def test_every_write_path_checks_the_endpoint(backend, tmp_path):
    async with running(backend, tmp_path) as client:
        bad = r4_subscription("Patient?gender=male", "http://2130706433/hook")
        transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": bad, "request": {"method": "POST", "url": "Subscription"}}]}
        assert (await client.post("/", json=transaction, headers=FHIR_JSON)).status_code == 422
        assert (await client.put("/Subscription/s1", json={**bad, "id": "s1"}, headers=FHIR_JSON)).status_code == 422
        good = await subscribe(client, r4_subscription("Patient?gender=male", "http://93.184.215.14:9/hook"))
        patch = [{"op": "replace", "path": "/channel/endpoint", "value": "http://[::ffff:7f00:1]/hook"}]
        patched = await client.patch(f"/Subscription/{good['id']}", content=json.dumps(patch),
                                     headers={"Content-Type": "application/json-patch+json"})
        assert patched.status_code == 422, patched.text


async def test_allowed_networks_open_only_themselves(backend, tmp_path):
    async with running(backend, tmp_path, subscription_allowed_networks="127.0.0.0/8, 10.0.0.0/8") \
            as client:
        for endpoint in ("http://127.0.0.1:9/hook", "http://2130706433:9/hook", "http://10.1.2.3/hook",
                         "http://[::ffff:10.1.2.3]/hook"):
            response = await client.post("/Subscription", json=r4_subscription("Patient?gender=male", endpoint),
                                         headers=FHIR_JSON)
            assert response.status_code == 201, (endpoint, response.text)
        for endpoint in ("http://192.168.1.1/hook", "http://169.254.169.254/", "http://[::1]:9/hook"):
            response = await client.post("/Subscription", json=r4_subscription("Patient?gender=male", endpoint),
                                         headers=FHIR_JSON)
            assert response.status_code == 422, (endpoint, response.text)


async def test_hearth_itself_is_refused(backend, tmp_path):
    """A full-payload subscription to Hearth's own base URL would update the resource it was told about, which
    is a change, which is notified…: refused at its base URL in any spelling, and at its listening address even
    where loopback is allowed."""
    async with running(backend, tmp_path, subscription_allowed_networks="127.0.0.0/8", port=8765) \
            as client:
        for endpoint in (BASE, "http://HEARTH.test:80/fhir/", "http://hearth.test./elsewhere"):
            assert "Hearth's own base URL" in await refused(client, endpoint, payload="application/fhir+json")
        for endpoint in ("http://127.0.0.1:8765/fhir", "http://127.1:8765/fhir", "http://[::ffff:127.0.0.1]:8765/"):
            assert "where Hearth itself listens" in await refused(client, endpoint, payload="application/fhir+json")


class Rebinding(AbstractResolver):
    """A name that resolves to a public address first (at create) and to 127.0.0.1 afterwards (at send)."""

    answers = ["93.184.215.14"]
    later = "127.0.0.1"

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list:
        address = self.answers.pop(0) if self.answers else self.later
        return [{"hostname": host, "host": address, "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


def rebinding(first: list[str]) -> type[Rebinding]:
    return type("Fresh", (Rebinding,), {"answers": list(first)})


async def test_dns_rebinding_reaches_nothing(backend, tmp_path, receiver):
    """The name is checked at create (public then) and its addresses again when connecting (loopback now)."""
    async with running(backend, tmp_path, resolver=rebinding(["93.184.215.14"]),
                       subscription_retry_horizon=1 / 3600) as client:
        sub = await subscribe(client, r4_subscription("Patient?gender=male",
                                                      f"http://hooks.rebind.test:{receiver.port}/hook"))
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        current = await wait_status(client, sub["id"], "error")
    assert "127.0.0.1, a loopback address" in current["error"], current["error"]
    assert receiver.attempts == 0


async def test_a_resolved_name_is_delivered_to_where_it_is_allowed(backend, tmp_path, receiver):
    """The same resolver, with loopback allowed: the notification arrives (so the refusal above is the policy's)."""
    async with running(backend, tmp_path, resolver=rebinding([]), subscription_allowed_networks="127.0.0.0/8") \
            as client:
        await subscribe(client, r4_subscription("Patient?gender=male",
                                                f"http://hooks.rebind.test:{receiver.port}/hook"))
        await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
        [notification] = await receiver.wait_for(1)
        assert notification.path == "/hook"


async def test_a_name_resolving_to_a_refused_address_now_is_refused_at_create(backend, tmp_path):
    async with running(backend, tmp_path, resolver=rebinding(["10.9.8.7"])) as client:
        diagnostics = await refused(client, "https://hooks.inside.test/hook")
        assert "'hooks.inside.test' resolves to 10.9.8.7, a private address" in diagnostics


async def test_redirects_are_not_followed(backend, tmp_path):
    """A 302 is a failed delivery (ending in error like any), never a request to where it points."""
    receiver = await Receiver(redirect="/elsewhere").start()
    try:
        async with running(backend, tmp_path, subscription_allowed_networks="127.0.0.0/8",
                           subscription_retry_horizon=1 / 3600) as client:
            sub = await subscribe(client, r4_subscription("Patient?gender=male", receiver.url + "/hook"))
            await client.post("/Patient", json={"resourceType": "Patient", "gender": "male"}, headers=FHIR_JSON)
            current = await wait_status(client, sub["id"], "error")
        assert "answered 302" in current["error"]
        assert receiver.attempts >= 1 and receiver.received == []  # /elsewhere was never asked
    finally:
        await receiver.stop()


@pytest.mark.parametrize("url, reason", [
    ("http://hearth.test/fhir/Patient/1", "Hearth's own base URL"),
    ("http://127.0.0.1:{port}/hook", "127.0.0.1, a loopback address"),
    ("http://[::ffff:7f00:1]:{port}/hook", "127.0.0.1 (as ::ffff:7f00:1), a loopback address"),
])
async def test_send_checks_the_url_it_is_given(receiver, url, reason):
    """aiohttp connects to a literal address without asking the resolver: `send` checks it itself."""
    policy = EgressPolicy(own_origin=("http", "hearth.test", 80))
    channel = Channel("rest-hook", url, (), None, "empty")
    async with aiohttp.ClientSession() as session:
        with pytest.raises(DeliveryFailed, match=reason.replace("(", r"\(").replace(")", r"\)")):
            await send(session, policy, channel, Outgoing("POST", url.format(port=receiver.port), None), 5)
    assert receiver.attempts == 0
