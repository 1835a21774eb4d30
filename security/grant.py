"""What one caller was granted: its scopes with the launch context (patient, user), its roles and its element
mask, and what they mean for one resource type and interaction.

The policy (security/policy.py) asks a grant which rules let its caller do an action on a type; each rule is a
scope and the conditions a resource must meet under it, as search clauses: the launch patient's compartment for
`patient/` scopes (types outside every patient compartment are shared reference data), and a v2 scope's
restriction (`?category=laboratory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hearth.search.compartments import COMPARTMENTS, compartment_clause
from hearth.search.ir import Clause
from hearth.security.scopes import Scope, resource_scopes

ROLES = ("admin", "clinician", "integration", "auditor", "patient")
# the extension a Subscription records its owner's grant in (subscriptions/model.py), as JSON (`Grant.record`)
OWNER_EXTENSION = "http://hearth.dev/fhir/StructureDefinition/subscription-owner"


@dataclass(frozen=True, slots=True)
class Rule:
    """One scope as it applies to one type: the clauses a resource must match (none: every resource)."""

    scope: Scope
    where: tuple[Clause, ...]


@dataclass(frozen=True)
class Grant:
    scope: str  # the granted scope string, as issued
    client: str = ""  # client_id
    user: str | None = None  # the user's name (user/ and patient/ scopes speak for a user)
    fhir_user: str | None = None  # `Practitioner/123`, `Patient/9`: the user as a FHIR resource
    patient: str | None = None  # the launch patient's id (confines patient/ scopes)
    roles: frozenset[str] = frozenset()
    mask: tuple[str, ...] = ()  # elements never shown to this client (`Patient.name`)
    token_id: str = ""  # the access token's jti (for revocation and audit)
    scopes: tuple[Scope, ...] = field(init=False)
    _rules: dict[tuple[str, str], tuple[Rule, ...] | None] = field(init=False, default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", resource_scopes(self.scope))

    def covers(self, resource_type: str, action: str) -> bool:
        """Whether any scope lets the caller do `action` (c, r, u, d, s) on some resources of the type."""
        return any(scope.covers(resource_type, action) and self._usable(scope, resource_type) for scope in self.scopes)

    def rules(self, resource_type: str, action: str,
              restriction: Callable[[str, tuple[tuple[str, str], ...]], tuple[Clause, ...]]) -> tuple[Rule, ...] | None:
        """The rules under which the caller may do `action` on resources of the type: None when one of them
        admits every resource (nothing to check), () when none applies. `restriction(type, params)` parses a v2
        scope's restriction into clauses (it needs the search registry)."""
        key = (resource_type, action)
        if key not in self._rules:
            self._rules[key] = self._compile(resource_type, action, restriction)
        return self._rules[key]

    def _compile(self, resource_type: str, action: str,
                 restriction: Callable[[str, tuple[tuple[str, str], ...]], tuple[Clause, ...]]
                 ) -> tuple[Rule, ...] | None:
        rules = []
        for scope in self.scopes:
            if not scope.covers(resource_type, action) or not self._usable(scope, resource_type):
                continue
            where = restriction(resource_type, scope.restriction) if scope.restriction else ()
            if scope.context == "patient" and in_patient_compartment(resource_type):
                where = (compartment_clause("Patient", self.patient or "", resource_type), *where)
            if not where:
                return None
            rules.append(Rule(scope, where))
        return tuple(rules)

    def _usable(self, scope: Scope, resource_type: str) -> bool:
        """A patient/ scope needs a launch patient for the types of the patient compartment."""
        return scope.context != "patient" or self.patient is not None or not in_patient_compartment(resource_type)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def record(self) -> dict[str, Any]:
        """The grant as JSON, to be held to later (a Subscription's owner)."""
        return {"scope": self.scope, "client": self.client, "user": self.user, "fhirUser": self.fhir_user,
                "patient": self.patient, "roles": sorted(self.roles), "mask": list(self.mask)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Grant:
        return cls(str(record.get("scope", "")), client=str(record.get("client", "")), user=record.get("user"),
                   fhir_user=record.get("fhirUser"), patient=record.get("patient"),
                   roles=frozenset(record.get("roles", ())), mask=tuple(record.get("mask", ())))


def in_patient_compartment(resource_type: str) -> bool:
    """Whether resources of the type can belong to a patient's compartment (else: shared data, like Medication)."""
    return resource_type in COMPARTMENTS["Patient"]
