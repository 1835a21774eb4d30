"""Test helper: a slice of the Synthea data with every reference made local (`Type/id`), loaded through interactions.

Independent of the transaction code: urn:uuid references are mapped from the bundles' fullUrls and conditional
references (`Organization?identifier=system|value`) from the batch files' identifiers, here in plain Python.
"""

from __future__ import annotations

import asyncio
import bz2

from functools import lru_cache
from pathlib import Path

from hearth.capability import fhir_json
from bench.grow import local_references
from hearth.interactions import crud
from hearth.interactions.request import SYSTEM
from hearth.interactions.context import Context

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"


def _bundles(limit: int) -> tuple[list[dict], list[dict]]:
    """(batch bundles, the `limit` smallest patient bundles) — small so the MongoDB suite stays quick on mongomock."""
    files = sorted(SYNTHEA.glob("*.json.bz2"))
    batch = [fhir_json.loads(bz2.decompress(f.read_bytes())) for f in files if f.name.startswith("0-")]
    patients = [fhir_json.loads(bz2.decompress(f.read_bytes())) for f in files if not f.name.startswith("0-")]
    patients.sort(key=lambda bundle: len(bundle["entry"]))
    return batch, patients[:limit]


@lru_cache(maxsize=2)
def synthea_resources(patients: int = 10) -> tuple[dict, ...]:
    """The `patients` smallest patient bundles' resources and the batch resources they refer to, every
    reference made local."""
    batch, records = _bundles(patients)
    by_url: dict[str, str] = {}
    by_identifier: dict[tuple[str, str], str] = {}
    for bundle in batch + records:
        for entry in bundle["entry"]:
            resource = entry["resource"]
            local = f"{resource['resourceType']}/{resource['id']}"
            by_url[entry.get("fullUrl", "")] = local
            for identifier in resource.get("identifier", []):
                key = f"{identifier.get('system')}|{identifier.get('value')}"
                by_identifier[(resource["resourceType"], key)] = local
    referenced: set[str] = set()

    def rewrite(resource: dict) -> dict:
        return local_references(resource, by_url, by_identifier, referenced)

    patient_resources = [rewrite(entry["resource"]) for bundle in records for entry in bundle["entry"]]
    shared = [rewrite(entry["resource"]) for bundle in batch for entry in bundle["entry"]
              if f"{entry['resource']['resourceType']}/{entry['resource']['id']}" in referenced]
    return tuple(shared + patient_resources)


async def load(ctx: Context, resources: tuple[dict, ...], concurrency: int = 16) -> None:
    """PUT every resource at its own id through the update interaction."""
    queue = list(resources)

    async def worker() -> None:
        while queue:
            resource = queue.pop()
            await crud.update(ctx, SYSTEM, resource["resourceType"], resource["id"], resource)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
