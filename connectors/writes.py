"""Writing resources at their ids through the dispatcher as one transaction (all or nothing): every resource
updated-as-created, those expected at a version only if still at it (If-Match), and a resource whose content is
already current left as it is (no new version for what is sent again).

A store without transactions (MongoDB not run as a replica set) takes the same updates one after another, the
resources others refer to first: a failure midway leaves the first ones written, and the same resources sent
again converge on the same versions (every write is an idempotent update at a computed id)."""

from __future__ import annotations

from typing import Any

from hearth.capability.outcome import FhirError
from hearth.interactions.bundle_entries import Result
from hearth.interactions.context import Context
from hearth.interactions.dispatcher import dispatch
from hearth.interactions.request import Caller, Request


class Changed(Exception):
    """A resource expected at a version (If-Match) has another one by now: nothing was written."""


async def commit(ctx: Context, caller: Caller, resources: dict[str, dict[str, Any]],
                 expected: dict[str, int]) -> list[Result]:
    """Write `resources` (by `Type/id`) in one transaction, `expected` giving the version a key must still have;
    each entry's Result, in the order of `resources`."""
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
