"""A server requiring tokens, seeded with two patients' data, and tokens for any scope (issued as a client's)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import BASE, make_store
from hearth.server.app import create_app
from hearth.server.settings import Settings

FHIR_JSON = {"Content-Type": "application/fhir+json"}
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{CATEGORY}|laboratory"


def observation(observation_id: str, patient: str, category: str, code: str = "8867-4") -> dict:
    return {"resourceType": "Observation", "id": observation_id, "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/{patient}"}, "performer": [{"reference": "Practitioner/dr"}]}


SEED = [
    {"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}], "gender": "female",
     "generalPractitioner": [{"reference": "Practitioner/dr"}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}], "gender": "female"},
    {"resourceType": "Practitioner", "id": "dr", "name": [{"family": "House"}]},
    observation("o1-lab", "p1", "laboratory"),
    observation("o1-vital", "p1", "vital-signs", "8310-5"),
    observation("o2-lab", "p2", "laboratory"),
    observation("o2-vital", "p2", "vital-signs", "8310-5"),
]


class Secured:
    def __init__(self, app, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    async def token(self, scope: str, patient: str | None = None, mask: tuple[str, ...] = (),
                    name: str | None = None, role: str | None = None) -> dict[str, str]:
        """Authorization headers with a token granting exactly `scope` (to a client registered for it), for a
        user of `role` if given."""
        authority = self.app.authority
        name = name or f"client-{abs(hash((scope, patient, mask)))}"
        client = await authority.client(name)
        if client is None:
            await authority.add_client(name, scope, secret=True, mask=mask)
            client = await authority.client(name)
        user = None
        if role is not None:
            await authority.add_user(f"{role}-user", role, patient=patient and f"Patient/{patient}", password="pw")
            user = await authority.records.get("user", f"{role}-user")
        issued = await authority.issue(client, scope, patient=patient, user=user)
        return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
async def secured(backend: str, tmp_path: Path):
    settings = Settings(storage=str(tmp_path / "hearth.db"), base_url=BASE, auth="required",
                        subscription_allowed_networks="127.0.0.0/8", subscription_retry_base=0.05)
    app = create_app(settings, make_store(backend, tmp_path))
    await app.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        world = Secured(app, client)
        await seed(client, await world.token("system/*.cruds", name="seeder"))
        yield world
    await app.shutdown()


async def seed(client: httpx.AsyncClient, authorization: dict[str, str]) -> None:
    """Store the SEED resources, as a caller allowed to write them."""
    for resource in SEED:
        response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource,
                                    headers={**FHIR_JSON, **authorization})
        assert response.status_code == 201, response.text


def ids(bundle: dict) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", ()) if "resource" in e
            and e["resource"]["resourceType"] != "OperationOutcome"}
