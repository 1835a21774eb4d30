"""`Observation/$lastn`: the `max` most recent Observations (by effective date) of each code, per patient, among
those the usual Observation search parameters (patient/subject, category, code, date, …) match.

One search of the caller's parameters sorted by `-date` (narrowed by the caller's policy like any search), read
page by page; the first `max` of each (subject, code) group are kept. The scan is bounded (`_SCAN_LIMIT`
matches): past it the request is refused as too costly, with what to narrow.
"""

from __future__ import annotations

from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions import operations
from hearth.interactions.bundles import bundle, entry, full_url
from hearth.interactions.context import Context, released
from hearth.interactions.operations.arguments import body_resource, parameters, text
from hearth.interactions.refusals import answered
from hearth.interactions.request import Outcome, Request
from hearth.interactions.search import parse_query
from hearth.search import paging
from hearth.storage.base import Version

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Observation-lastn"
_SCAN_LIMIT = 50_000  # matches read at most: a whole population's vital signs is a job for $export
_SHAPE = frozenset({"max", "_sort", "_count", "_cursor", "_include", "_revinclude", "_total", "_summary",
                    "_elements"})


def install(ctx: Context) -> None:
    """Register this module's operations on the context."""
    ctx.operations[("Observation", "$lastn")] = lastn
    operations.served(ctx, "lastn", DEFINITION, "Observation")


async def lastn(ctx: Context, request: Request) -> Outcome:
    if request.id is not None:
        raise FhirError(400, "not-supported", "$lastn is a type-level operation: Observation/$lastn")
    inputs = [(name, text(value)) for name, value in parameters(request, body_resource(request))]
    most = _max(dict(inputs).get("max", "1"))
    criteria = [(name, value) for name, value in inputs if name.partition(":")[0] not in _SHAPE]
    query = parse_query(ctx, ("Observation",), [*criteria, ("_sort", "-date"), ("_count", str(ctx.max_count))],
                        strict=request.strict)
    query = ctx.policy.restrict(request.caller, query)
    kept: dict[tuple, int] = {}
    chosen: list[Version] = []
    scanned = 0
    while query is not None:
        with answered():
            page = await ctx.store.search(query)
        scanned += len(page.matches)
        if scanned > _SCAN_LIMIT:
            raise FhirError(400, "too-costly", f"$lastn would read more than {_SCAN_LIMIT:,} Observations: narrow "
                                               "it (patient, category, code, date)")
        for version in page.matches:
            group = _group(fhir_json.loads(version.body, trusted=True))
            if kept.get(group, 0) < most:
                kept[group] = kept.get(group, 0) + 1
                chosen.append(version)
        query = paging.following(query, page)
    shown = released(ctx, request, chosen)
    entries = [entry(full_url(ctx.base_url, version), version.body, search={"mode": "match"}) for version in shown]
    return Outcome(200, body=bundle("searchset", entries, len(shown)))


def _max(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise FhirError(400, "invalid", f"max must be a positive integer, not {value!r}", ("max",))
    return int(value)


def _group(observation: dict[str, Any]) -> tuple:
    """(subject, code) of an Observation: the code as the set of its codings' system|code (its text when it has
    none)."""
    subject = (observation.get("subject") or {}).get("reference")
    code = observation.get("code") or {}
    codings = frozenset((c.get("system"), c.get("code")) for c in code.get("coding") or () if isinstance(c, dict))
    return subject, codings or code.get("text")
