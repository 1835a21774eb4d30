"""What one type of an export holds, read page by page through the search engine with keyset paging (never
OFFSET): the type's `_typeFilter` searches (or all of it), changed after `_since` and not after the job's
transactionTime, and for Patient and Group exports only the compartments of the patients, a chunk of patients per
search (Hearth's Patient CompartmentDefinition)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, AsyncIterator
from urllib.parse import parse_qsl

from hearth.interactions.context import Context
from hearth.interactions.refusals import answered
from hearth.interactions.search import parse_query
from hearth.search import paging
from hearth.search.compartments import compartment_clause
from hearth.search.ir import AnyOfPred, Clause, Query
from hearth.storage.base import Version

CHUNK = 100  # patients per compartment search: one OR of their compartment clauses


async def versions(ctx: Context, plan: dict[str, Any], resource_type: str, transaction_time: str,
                   page: int) -> AsyncIterator[list[Version]]:
    """The type's resources in the export, a page at a time, each once."""
    queries = [_query(ctx, resource_type, params, page)
               for params in _searches(plan, resource_type, transaction_time)]
    patient_level = plan["level"] != "system"
    # a resource can match two filters, or be in the compartments of patients of two chunks: the ids written are
    # remembered then (only then: a plain export holds no more than one page in memory)
    seen: set[str] | None = set() if len(queries) > 1 or patient_level else None
    for query in queries:
        if not patient_level:
            async for found in _pages(ctx, query, seen):
                yield found
            continue
        async for chunk in _patient_chunks(ctx, plan, page):
            async for found in _pages(ctx, replace(query, where=query.where + (_compartments(resource_type, chunk),)),
                                      seen):
                yield found


def _searches(plan: dict[str, Any], resource_type: str, transaction_time: str) -> list[list[tuple[str, str]]]:
    # a resource changed after transactionTime is left out (the spec's SHOULD NOT): the next export, with
    # `_since` = this transactionTime, carries it (or its deletion)
    window = [("_lastUpdated", f"le{transaction_time}")]
    if plan.get("since"):
        window.append(("_lastUpdated", f"gt{plan['since']}"))
    filters = plan["filters"].get(resource_type) or [""]
    return [parse_qsl(query, keep_blank_values=True) + window for query in filters]


def _query(ctx: Context, resource_type: str, params: list[tuple[str, str]], page: int) -> Query:
    return replace(parse_query(ctx, (resource_type,), params, strict=True), count=page)


def _compartments(resource_type: str, patients: list[str]) -> Clause:
    """The clause "in the compartment of one of `patients`"."""
    inner = tuple(clause for patient in patients
                  for clause in compartment_clause("Patient", patient, resource_type).preds[0].clauses)
    return Clause("_compartment", "special", (AnyOfPred(inner),))


async def _patient_chunks(ctx: Context, plan: dict[str, Any], page: int) -> AsyncIterator[list[str]]:
    """The export's patients, CHUNK at a time: those the plan names (`patient`, a Group's members), else every
    stored Patient."""
    named = plan.get("patients")
    if named is not None:
        for start in range(0, len(named), CHUNK):
            yield named[start:start + CHUNK]
        return
    async for found in _pages(ctx, _query(ctx, "Patient", [], CHUNK), None):
        yield [version.id for version in found]


async def _pages(ctx: Context, query: Query, seen: set[str] | None) -> AsyncIterator[list[Version]]:
    following: Query | None = query
    while following is not None:
        with answered():  # a search past its deadline is a FhirError (the job notes it as an error)
            found = await ctx.store.search(following)
        following = paging.following(following, found)
        matches = found.matches
        if seen is not None:
            matches = [version for version in matches if version.id not in seen]
            seen.update(version.id for version in matches)
        if matches:
            yield matches
