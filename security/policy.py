"""The SMART policy: what the dispatcher asks before, during and after every interaction (interactions/policy.py).

- `before`: 401 without a grant when authorization is required; 403 when no scope allows the interaction's action
  on its type at all (that reveals nothing: the type's existence is public).
- `restrict`: a search (and a conditional interaction's search) matches only what the grant admits, so totals,
  pages and counts agree with what is shown; chains and `_has` reach only resources the caller may search.
- `after`: a resource leaves only when a read or search scope admits it (else it answers exactly as one that does
  not exist), with the client's element mask applied.
- `admit`: every write, on every path, must be admitted by a create/update/delete scope, for the content written
  and for the version it replaces (one the caller may not read is treated as absent).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import orjson

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.interactions.request import Caller, Request
from hearth.search.extract import extract
from hearth.search.ir import AnyOfPred, ChainPred, Clause, HasPred, Query, TokenPred
from hearth.search.matcher import matches
from hearth.security.grant import OWNER_EXTENSION, Grant, Rule
from hearth.security.masks import masked
from hearth.storage.base import Version, Write

if TYPE_CHECKING:
    from hearth.interactions.context import Context

_ACTION = {"read": "r", "vread": "r", "history-instance": "r", "history-type": "r", "history-system": "r",
           "search-type": "s", "search-system": "s", "search-compartment": "s",
           "create": "c", "update": "u", "patch": "u", "delete": "d",
           "conditional-create": "c", "conditional-update": "u", "conditional-patch": "u",
           "conditional-delete": "d", "operation": "r"}
_CONDITIONAL = frozenset({"conditional-create", "conditional-update", "conditional-patch", "conditional-delete"})
_NEVER = Clause("_id", "token", (TokenPred(()),))  # matches no resource


class Unauthorized(FhirError):
    def __init__(self, diagnostics: str) -> None:
        super().__init__(401, "login", diagnostics, headers={"WWW-Authenticate": 'Bearer realm="hearth"'})


def forbidden(diagnostics: str) -> FhirError:
    return FhirError(403, "forbidden", diagnostics)


class SmartPolicy:
    """`required`: a request without a grant (anonymous) is refused; otherwise anonymous callers are unrestricted
    (development on loopback). Callers with a grant are held to it either way; Hearth's own callers (system) are
    not restricted."""

    def __init__(self, ctx: Context, required: bool) -> None:
        self.ctx = ctx
        self.required = required

    # -- before ----------------------------------------------------------------------------------------------

    def before(self, request: Request) -> None:
        if request.interaction == "capabilities":  # public: how to get a token is in it
            return
        grant = self._grant(request.caller)
        if grant is None or request.interaction in ("batch", "transaction"):  # each entry is asked on its own
            return
        action = _ACTION[request.interaction]
        if request.type == "AuditEvent" and not grant.roles & {"auditor", "admin"}:
            raise forbidden("AuditEvents are for the auditor and admin roles")
        if request.type == "Subscription" and action == "s" and _owned_only(grant):
            raise forbidden("With patient/ scopes a client sees only its own Subscriptions: read them by id")
        for resource_type in self._types(request, grant, action):
            if not grant.covers(resource_type, action):
                raise forbidden(f"The access token grants no '{action}' access to {resource_type}")
            if request.interaction in _CONDITIONAL and not grant.covers(resource_type, "s"):
                raise forbidden(f"A conditional {_ACTION[request.interaction]} needs search ('s') access to "
                                f"{resource_type}")

    def _types(self, request: Request, grant: Grant, action: str) -> tuple[str, ...]:
        if request.type:
            return (request.type,)
        listed = tuple(t for value in request.params if value[0] == "_type" for t in value[1].split(",") if t)
        if listed:
            return listed
        if not any(scope.type == "*" and action in scope.actions for scope in grant.scopes):
            raise forbidden(f"A system-level {request.interaction} needs '{action}' access to every type "
                            f"(a */ scope): name the types with _type")
        return ()

    def _grant(self, caller: Caller) -> Grant | None:
        """The caller's grant; None for a caller that is not restricted. 401 when a grant is required."""
        grant = caller.grant
        if grant is None and caller.kind == "anonymous" and self.required:
            raise Unauthorized("This server requires a bearer access token (SMART on FHIR)")
        return grant

    # -- restrict ----------------------------------------------------------------------------------------

    def restrict(self, caller: Caller, query: Query) -> Query:
        grant = self._grant(caller)
        if grant is None:
            return query
        return restricted(self, grant, query)

    def search_where(self, grant: Grant, resource_type: str) -> tuple[Clause, ...] | None:
        """The clauses a resource of the type must match to be searched (None: every one); 403 when the grant's
        rules cannot be written as one search (several restricted scopes with several parameters each)."""
        rules = grant.rules(resource_type, "s", self._restriction)
        if rules is None:
            return None
        if not rules:
            return (_NEVER,)
        return _one_of(rules)

    def _restriction(self, resource_type: str, params: tuple[tuple[str, str], ...]) -> tuple[Clause, ...]:
        from hearth.interactions.search import parse_query
        return parse_query(self.ctx, (resource_type,), list(params), strict=True).where

    # -- after -------------------------------------------------------------------------------------------

    def after(self, request: Request, version: Version) -> Version | None:
        grant = self._grant(request.caller)
        if grant is None:
            return version
        if not self.visible(grant, version):
            return None
        return masked(version, grant.mask) if grant.mask else version

    def visible(self, grant: Grant, version: Version) -> bool:
        """Whether a read or search scope admits this version (a deleted one: only an unrestricted scope)."""
        if version.type == "Subscription" and _owned_only(grant) and (
                version.deleted or not _owns(grant, fhir_json.loads(version.body, trusted=True))):
            return False
        rules = [grant.rules(version.type, action, self._restriction) for action in "rs"]
        if any(found is None for found in rules):
            return True
        candidates = [rule for found in rules for rule in found or ()]
        if not candidates or version.deleted:
            return False
        return self._admitted(candidates, version.type, version.id, fhir_json.loads(version.body, trusted=True))

    def sees_all(self, request: Request) -> bool:
        """Whether nothing of what `request` covers is hidden from its caller (history totals are shown only then)."""
        grant = self._grant(request.caller)
        if grant is None:
            return True
        if request.type is None:
            return any(scope.type == "*" and not scope.restriction and scope.context != "patient"
                       and "r" in scope.actions for scope in grant.scopes)
        return grant.rules(request.type, "r", self._restriction) is None

    # -- writes ------------------------------------------------------------------------------------------

    async def admit(self, caller: Caller, writes: Sequence[Write]) -> None:
        grant = self._grant(caller)
        if grant is None:
            return
        for write in writes:
            action = "d" if write.body is None else "c" if write.previous == 0 else "u"
            rules = grant.rules(write.type, action, self._restriction)
            if rules == ():
                raise forbidden(f"The access token grants no '{action}' access to {write.type}")
            if write.previous:
                current = await self.ctx.store.vread(write.type, write.id, write.previous)
                if current is not None and not current.deleted:
                    if not self.visible(grant, current):
                        raise FhirError(404, "not-found", f"Resource {write.type}/{write.id} is not known")
                    self._check(rules, current.type, current.id, current.body, action)
            if write.body is not None:
                self._check(rules, write.type, write.id, write.body, action)

    def _check(self, rules: tuple[Rule, ...] | None, resource_type: str, resource_id: str, body: bytes,
               action: str) -> None:
        if rules is None:  # a rule admits every resource of the type: nothing to parse (~0.1 ms a write)
            return
        resource = fhir_json.loads(body, trusted=True)
        if not self._admitted(rules, resource_type, resource_id, resource):
            raise forbidden(f"{resource_type}/{resource_id} is outside what the access token grants ('{action}': "
                            f"{', '.join(str(rule.scope) for rule in rules)})")

    def _admitted(self, rules: Sequence[Rule], resource_type: str, resource_id: str, resource: dict[str, Any]) -> bool:
        entries = extract(resource, self.ctx.registry, self.ctx.base_url)
        return any(matches(rule.where, entries, resource_id=resource_id, resource_type=resource_type)
                   for rule in rules)


def _owned_only(grant: Grant) -> bool:
    """Whether the grant reaches Subscriptions through patient/ scopes only: then it sees only its own (their
    channels name other apps' endpoints and headers)."""
    return not any(scope.context != "patient" and scope.type in ("*", "Subscription") and not scope.restriction
                   and scope.actions & {"r", "s"} for scope in grant.scopes)


def _owns(grant: Grant, subscription: dict[str, Any]) -> bool:
    for extension in subscription.get("extension") or ():
        if extension.get("url") == OWNER_EXTENSION and isinstance(extension.get("valueString"), str):
            try:
                owner = orjson.loads(extension["valueString"])
            except orjson.JSONDecodeError:
                return False
            return owner.get("client") == grant.client and owner.get("patient") == grant.patient
    return False


def _one_of(rules: tuple[Rule, ...]) -> tuple[Clause, ...]:
    """The rules' conditions as one conjunction: the clauses they share, and of the rest one alternative."""
    shared = tuple(clause for clause in rules[0].where if all(clause in rule.where for rule in rules[1:]))
    rest = [tuple(clause for clause in rule.where if clause not in shared) for rule in rules]
    if any(not part for part in rest):
        return shared
    if len(rest) == 1:
        return shared + rest[0]
    if any(len(part) > 1 for part in rest):
        raise forbidden("Several restricted scopes with several parameters each apply to this search: search with "
                        "a token holding one of them")
    return (*shared, Clause("_grant", "special", (AnyOfPred(tuple(part[0] for part in rest)),)))


def restricted(policy: SmartPolicy, grant: Grant, query: Query) -> Query:
    """`query` matching only what `grant` lets its caller search, at the top and in every chain and `_has`."""
    types = query.types
    extra: tuple[Clause, ...] = ()
    if len(types) == 1:
        extra = policy.search_where(grant, types[0]) or ()
    elif types:
        wheres = {t: policy.search_where(grant, t) for t in types}
        if any(where is not None for where in wheres.values()):
            raise forbidden("This access token restricts some of these types: search them one at a time")
    elif not _unrestricted_everywhere(grant):
        raise forbidden("This access token restricts some types: a search across all types must name them (_type)")
    return replace(query, where=tuple(_nested(policy, grant, clause) for clause in query.where) + extra)


def _unrestricted_everywhere(grant: Grant) -> bool:
    return any(scope.type == "*" and "s" in scope.actions and not scope.restriction and scope.context != "patient"
               for scope in grant.scopes)


def _nested(policy: SmartPolicy, grant: Grant, clause: Clause) -> Clause:
    """The clause with every chain's targets and every `_has` source limited to what the grant searches."""
    preds = []
    for pred in clause.preds:
        if isinstance(pred, ChainPred):
            inner = tuple(_nested(policy, grant, c) for c in pred.where)
            for target in pred.target_types:
                where = policy.search_where(grant, target) if grant.covers(target, "s") else (_NEVER,)
                preds.append(ChainPred((target,), inner + (where or ())))
        elif isinstance(pred, HasPred):
            if not grant.covers(pred.source_type, "s"):
                return _NEVER
            where = policy.search_where(grant, pred.source_type) or ()
            inner = tuple(_nested(policy, grant, c) for c in pred.where)
            preds.append(HasPred(pred.source_type, pred.source_param, inner + where))
        elif isinstance(pred, AnyOfPred):
            preds.append(AnyOfPred(tuple(_nested(policy, grant, c) for c in pred.clauses)))
        else:
            preds.append(pred)
    return replace(clause, preds=tuple(preds))
