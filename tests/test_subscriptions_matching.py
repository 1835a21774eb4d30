"""One subscription's costly or failing criteria cannot hold up everyone's notifications, before or after a restart
(HEARTH_SUBSCRIPTION_MATCH_TIMEOUT), on both backends."""

from __future__ import annotations

import asyncio
from collections import Counter

from conftest import BASE, FHIR_JSON
from hearth.interactions import crud
from hearth.interactions.request import SYSTEM
from hearth.interactions.context import Context
from subscription_helpers import r4_subscription
from test_subscriptions import OBS, receiver, settings_for, subscribe  # noqa: F401 (fixture)
from test_subscriptions_backport import wait_status
from test_subscriptions_delivery import Running, shared_stores


def troubled(store) -> Counter:
    """Make `store`'s searches for the name `slowpoke` never end and those for `broken` fail; count them."""
    calls: Counter = Counter()
    search = store.search

    async def troubled_search(query, *args, **kwargs):
        shown = repr(query.where)
        if "slowpoke" in shown:
            calls["slowpoke"] += 1
            await asyncio.Event().wait()
        if "broken" in shown:
            calls["broken"] += 1
            raise RuntimeError("the index is on fire")
        return await search(query, *args, **kwargs)
    store.search = troubled_search
    return calls


async def test_a_failing_or_overrunning_criteria_stops_only_its_own_subscription(backend, tmp_path, receiver):
    first, restarted = shared_stores(backend, tmp_path)
    settings = settings_for(tmp_path, subscription_match_timeout=0.5)
    calls = troubled(first)
    async with Running(settings, first) as client:
        good = await subscribe(client, r4_subscription("Observation?code=http://loinc.org|8867-4",
                                                       receiver.url + "/good"))
        slow = await subscribe(client, r4_subscription("Observation?subject:Patient.name=slowpoke",
                                                       receiver.url + "/slow"))
        broken = await subscribe(client, r4_subscription("Observation?subject:Patient.name=broken",
                                                         receiver.url + "/broken"))
        await client.post("/Observation", json=OBS, headers=FHIR_JSON)
        [notification] = await receiver.wait_for(1)
        assert notification.path == "/good"
        overrun = (await wait_status(client, slow["id"], "error"))["error"]
        assert "took longer than HEARTH_SUBSCRIPTION_MATCH_TIMEOUT (0.5 s)" in overrun
        failed = (await wait_status(client, broken["id"], "error"))["error"]
        assert "failed: RuntimeError: the index is on fire" in failed
        await client.post("/Observation", json=OBS, headers=FHIR_JSON)
        await receiver.wait_for(2)
        assert calls == {"slowpoke": 1, "broken": 1}  # stopped: not matched again
    calls = troubled(restarted)
    async with Running(settings, restarted) as client:
        await client.post("/Observation", json=OBS, headers=FHIR_JSON)
        await receiver.wait_for(3)
        assert [r.path for r in receiver.received] == ["/good"] * 3 and not calls  # nor after a restart
        for sub, error in ((slow, overrun), (broken, failed)):
            current = (await client.get(f"/Subscription/{sub['id']}")).json()
            assert (current["status"], current["error"]) == ("error", error)
        assert (await client.get(f"/Subscription/{good['id']}")).json()["status"] == "active"
        # the client corrects the criteria: matched (and notified) again
        current = (await client.get(f"/Subscription/{slow['id']}")).json()
        corrected = {**current, "criteria": "Observation?code=http://loinc.org|8867-4", "status": "requested"}
        assert (await client.put(f"/Subscription/{slow['id']}", json=corrected, headers=FHIR_JSON)).json()["status"] \
            == "active"
        await client.post("/Observation", json=OBS, headers=FHIR_JSON)
        await receiver.wait_for(5)
        assert sorted(r.path for r in receiver.received[3:]) == ["/good", "/slow"]


async def test_a_stored_subscription_no_longer_accepted_goes_to_error_at_start(backend, tmp_path, receiver):
    """Stored without the checks (`hearth import`; or accepted before a limit or the endpoint policy existed):
    at start-up it goes to `error` saying why, and the others are notified."""
    first, restarted = shared_stores(backend, tmp_path)
    unchecked = Context(first, BASE)  # no subscription service: no write checks
    refused = {}
    for name, body in (("criteria", r4_subscription("Observation?colour=blue", receiver.url + "/colour")),
                       ("endpoint", r4_subscription("Observation?code=8867-4", "http://169.254.169.254/latest"))):
        version = await crud.create(unchecked, SYSTEM, "Subscription", {**body, "status": "active"})
        refused[name] = version.id
    await crud.create(unchecked, SYSTEM, "Subscription", {**r4_subscription("Observation?code=8867-4", receiver.url + "/good"),
                                                  "status": "active"})
    await first.close()
    async with Running(settings_for(tmp_path, subscription_allowed_networks="127.0.0.0/8"), restarted) as client:
        criteria = await wait_status(client, refused["criteria"], "error")
        assert criteria["error"].startswith("No longer accepted: Criteria 'Observation?colour=blue'")
        endpoint = await wait_status(client, refused["endpoint"], "error")
        assert "169.254.169.254, a link-local address" in endpoint["error"]
        await client.post("/Observation", json=OBS, headers=FHIR_JSON)
        [notification] = await receiver.wait_for(1)
        assert notification.path == "/good"
