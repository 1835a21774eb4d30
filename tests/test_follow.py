"""Several processes on one store (both backends; here two apps on one database, each with its own store, as two
processes have): what one keeps in memory follows what the others write, through the change log
(interactions/follower.py). The tests step the followers themselves."""

from __future__ import annotations

import uuid

from conftest import FHIR_JSON, reopenable
from export_helpers import Running, export_settings
from subscription_helpers import r4_subscription
from test_definitions import eye_patient, found, put, reindexed, search_parameter

STRICT = {"Prefer": "handling=strict"}


async def test_a_search_parameter_written_through_one_process_is_in_force_in_the_other(backend, tmp_path):
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path, follow_interval=3600)  # no pass but the test's own
    code = f"eye{uuid.uuid4().hex[:8]}"
    async with Running(settings, store()) as a, Running(settings, store()) as b:
        await put(b.client, eye_patient("before", "blue"))
        created = await a.client.post("/SearchParameter", json=search_parameter(code), headers=FHIR_JSON)
        assert created.status_code == 201, created.text
        assert (await b.client.get(f"/Patient?{code}=blue", headers=STRICT)).status_code == 400  # not yet known
        await put(b.client, eye_patient("unknowing", "blue"))  # written by b before it knows the parameter
        await b.app.follower.step()
        refused = await b.client.get(f"/Patient?{code}=blue", headers=STRICT)
        assert refused.status_code == 400 and "being indexed" in refused.text  # known, its job not done
        await reindexed(a.app, a.client, search_parameter(code)["url"])
        await b.app.reindexer.step()  # b learns the job is done
        assert found((await b.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == {"before", "unknowing"}
        assert found((await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).json()) == {"before", "unknowing"}
        statement = (await b.client.get("/metadata")).json()
        patient = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")
        assert code in {p["name"] for p in patient["searchParam"]}

        assert (await b.client.delete(f"/SearchParameter/{created.json()['id']}")).status_code == 204
        await a.app.follower.step()
        assert (await a.client.get(f"/Patient?{code}=blue", headers=STRICT)).status_code == 400


async def test_a_subscription_written_through_one_process_is_known_to_the_others(backend, tmp_path):
    store = reopenable(backend, tmp_path)
    settings = export_settings(tmp_path, follow_interval=3600)
    async with Running(settings, store()) as a, \
            Running(export_settings(tmp_path, follow_interval=3600, singletons=False), store()) as b:
        created = await a.client.post("/Subscription", headers=FHIR_JSON, json=r4_subscription(
            "Observation?status=final", "", channel_type="websocket"))
        assert created.status_code == 201, created.text
        subscription_id = created.json()["id"]
        assert b.app.subscriptions.registry.get(subscription_id) is None
        await b.app.follower.step()
        assert b.app.subscriptions.registry.get(subscription_id) is not None
        assert (await a.client.delete(f"/Subscription/{subscription_id}")).status_code == 204
        await b.app.follower.step()
        assert b.app.subscriptions.registry.get(subscription_id) is None
