"""What one message makes, written as one transaction through the dispatcher (all or nothing): every resource at
its id (update-as-create), those matched with stored ones only if still at the version matched (If-Match), and a
resource whose content is already current left as it is (no new version for a re-sent message).

A store without transactions (MongoDB not run as a replica set) takes the same updates one after another, the
resources others refer to first: a failure midway leaves the first ones written, and the message, tried again,
converges on the same resources (every write is an idempotent update at a computed id)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hearth.capability.outcome import FhirError
from hearth.connectors.hl7v2.frame import Refusal
from hearth.interactions.bundle_entries import Result
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Caller, Request


@dataclass
class Converted:
    """How one message ended: `state` done | failed (a dead letter) | rejected (AE, nothing written)."""

    state: str
    refusal: Refusal | None = None  # the AE an original-mode ACK or an application ACK gives
    reason: str | None = None  # a dead letter's reason
    error: str | None = None
    written: list[str] = field(default_factory=list)  # Type/id/_history/n of each resource written


class Changed(Exception):
    """A matched resource changed between matching and the commit: match again."""


async def commit(ctx: Context, caller: Caller, resources: dict[str, dict[str, Any]],
                 expected: dict[str, int]) -> list[Result]:
    """Write `resources` (by `Type/id`) in one transaction, `expected` giving the version a key must still have;
    each entry's Result."""
    try:
        if not ctx.store.supports_transactions:
            return [await _update(ctx, caller, key, resources[key], expected.get(key)) for key in _ordered(resources)]
        entries = []
        for key, resource in resources.items():
            request: dict[str, Any] = {"method": "PUT", "url": key}
            if key in expected:
                request["ifMatch"] = f'W/"{expected[key]}"'
            entries.append({"fullUrl": f"{ctx.base_url}/{key}", "resource": resource, "request": request})
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        outcome = await dispatch(ctx, Request("transaction", caller, body=bundle, prefer_return="minimal",
                                              keep_unchanged=True))
    except FhirError as error:
        if error.status == 412:
            raise Changed() from None
        raise
    return outcome.entries


async def _update(ctx: Context, caller: Caller, key: str, resource: dict[str, Any], expected: int | None) -> Result:
    resource_type, resource_id = key.split("/", 1)
    outcome = await dispatch(ctx, Request("update", caller, resource_type, resource_id, body=resource,
                                          if_match=expected, keep_unchanged=True))
    return Result(outcome.status, outcome.version, unchanged=outcome.unchanged)


# the order of writes without a transaction: what is referred to before what refers to it
_FIRST = ("Organization", "Location", "Practitioner", "PractitionerRole", "Patient", "RelatedPerson", "Coverage",
          "Encounter", "ServiceRequest", "Specimen", "Observation")


def _ordered(resources: dict[str, dict[str, Any]]) -> list[str]:
    rank = {name: n for n, name in enumerate(_FIRST)}
    return sorted(resources, key=lambda key: rank.get(key.split("/", 1)[0], len(_FIRST)))
