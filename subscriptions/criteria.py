"""Criteria (`Observation?code=…&patient=…`) parsed and compiled once per subscription.

R4 `Subscription.criteria` and each backport filter criterion are searches of one resource type: they
go through the search parser under strict handling (an unknown parameter is an error, not ignored) and
compile to the in-memory matcher, so a subscription matches exactly what the same search would return.

Each compiled filter also names a *guard*: one clause every match must satisfy whose values can be
looked up by key (token `system|code`, or a local reference id). The dispatcher indexes subscriptions
by their guards, so a write is matched against the few subscriptions that could match it, not all.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from hearth.capability.outcome import FhirError
from hearth.capability.terminology import default_terminology
from hearth.capability.resource_types import is_resource_type
from hearth.search.ir import Clause, ReferencePred, TokenPred
from hearth.search.matcher import Matcher, compile_matcher
from hearth.search.parse import parse_search
from hearth.interactions.context import Context

# search result parameters say how to page or shape results: meaningless for a notification
_RESULT_PARAMS = {"_sort", "_count", "_include", "_revinclude", "_summary", "_elements", "_total", "_contained",
                  "_containedType", "_cursor", "_format", "_pretty"}

Guard = tuple[str, str, frozenset]
"""(kind, param, keys): kind "token" keys are (system or None, code or None) as Prepared.token_keys
gives them; kind "ref" keys are referenced resource ids."""


@dataclass(frozen=True, slots=True)
class Filter:
    resource_type: str
    text: str
    matcher: Matcher
    guard: Guard | None


def compile_criteria(ctx: Context, text: str, expression: str) -> Filter:
    """The Filter for `Type?params`; a 422 OperationOutcome naming `expression` when it does not parse."""
    resource_type, _, query_string = text.strip().partition("?")
    if not is_resource_type(resource_type):
        raise _bad(f"Criteria '{text}' must start with a resource type (e.g. Observation?code=…)", expression)
    params = parse_qsl(query_string, keep_blank_values=True)
    unusable = sorted({name for name, _ in params if name.partition(":")[0] in _RESULT_PARAMS})
    if unusable:
        raise _bad(f"Criteria '{text}': result parameters {', '.join(unusable)} cannot be used in criteria",
                   expression)
    try:
        query = parse_search((resource_type,), params, registry=ctx.registry, strict=True,
                             default_count=ctx.default_count, max_count=ctx.max_count, base_url=ctx.base_url,
                             terminology=default_terminology(), limits=ctx.limits.search)
    except FhirError as error:
        raise _bad(f"Criteria '{text}': {error.diagnostics}", expression) from None
    return Filter(resource_type, text, compile_matcher(query.where), _guard(query.where))


def _guard(where: tuple[Clause, ...]) -> Guard | None:
    """The first clause whose every value is an exact token or a local reference id, as lookup keys."""
    for clause in where:
        preds = clause.preds
        if preds and all(type(p) is TokenPred and not p.negated for p in preds):
            return "token", clause.param, frozenset(key for p in preds for key in p.keys)
        if preds and all(type(p) is ReferencePred and p.modifier is None and p.url is None and p.target_id
                         for p in preds):
            return "ref", clause.param, frozenset(p.target_id for p in preds)
    return None


def _bad(diagnostics: str, expression: str) -> FhirError:
    return FhirError(422, "invalid", diagnostics, (expression,))
