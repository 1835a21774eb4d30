"""SMART scopes: `patient/Observation.rs?category=…` (App Launch 2.x) and `user/Patient.read` (1.0).

A resource scope says who it speaks for (`patient`: the launch patient's compartment; `user`: what the user may;
`system`: a backend service), a type or `*`, the interactions allowed (c create, r read, u update, d delete,
s search) and, for v2, an optional restriction written as search parameters. Other scopes (`openid`, `fhirUser`,
`launch`, `offline_access`, …) grant no resource access and are kept as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl

Context = Literal["patient", "user", "system"]
ACTIONS = "cruds"
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"(patient|user|system)/([A-Za-z]+|\*)\.([a-z*]+)(?:\?(.*))?\Z")


@dataclass(frozen=True, slots=True)
class Scope:
    context: Context
    type: str  # a resource type, or "*"
    actions: frozenset[str]  # of "cruds"
    restriction: tuple[tuple[str, str], ...] = ()  # search parameters a resource must match (v2 granular scopes)

    def covers(self, resource_type: str, action: str) -> bool:
        return action in self.actions and self.type in ("*", resource_type)

    def __str__(self) -> str:
        actions = "".join(a for a in ACTIONS if a in self.actions)
        query = "&".join(f"{name}={value}" for name, value in self.restriction)
        return f"{self.context}/{self.type}.{actions}" + (f"?{query}" if query else "")


def parse_scope(text: str) -> Scope | None:
    """The resource scope `text` names, or None (not a resource scope, or malformed: it grants nothing)."""
    match = _SCOPE.match(text)
    if match is None:
        return None
    context, resource_type, actions, query = match.groups()
    if actions in _V1:
        if query is not None:  # restrictions are a v2 form
            return None
        letters = _V1[actions]
    elif _in_order(actions):
        letters = actions
    else:
        return None
    restriction = tuple(parse_qsl(query, keep_blank_values=False, strict_parsing=False)) if query else ()
    if query and not restriction:
        return None
    return Scope(context, resource_type, frozenset(letters), restriction)  # type: ignore[arg-type]


def _in_order(actions: str) -> bool:
    """v2 actions are a non-empty subsequence of "cruds", in that order."""
    position = 0
    for letter in actions:
        found = ACTIONS.find(letter, position)
        if found < 0:
            return False
        position = found + 1
    return bool(actions)


def split(text: str) -> list[str]:
    """A space-separated scope string as its scopes, in order, without repeats."""
    return list(dict.fromkeys(text.split()))


def resource_scopes(text: str) -> tuple[Scope, ...]:
    """The resource scopes of a scope string (the others grant no resource access)."""
    return tuple(scope for scope in map(parse_scope, split(text)) if scope is not None)


def narrowed(asked: str, allowed: str) -> str:
    """The scopes of `asked` within `allowed`: a resource scope keeps the actions an allowed scope of the same
    context and type (or `*`) also has, and its restriction (an allowed scope's restriction applies when it has
    none of its own); other scopes are kept when allowed names them."""
    allowed_scopes = resource_scopes(allowed)
    allowed_names = set(split(allowed))
    kept: list[str] = []
    for name in split(asked):
        scope = parse_scope(name)
        if scope is None:
            if name in allowed_names or (name.startswith("launch") and "launch" in allowed_names):
                kept.append(name)
            continue
        for ceiling in allowed_scopes:
            if ceiling.context != scope.context or ceiling.type not in ("*", scope.type):
                continue
            if ceiling.restriction and scope.restriction and ceiling.restriction != scope.restriction:
                continue
            actions = scope.actions & ceiling.actions
            if actions:
                kept.append(str(Scope(scope.context, scope.type, actions, scope.restriction or ceiling.restriction)))
    return " ".join(dict.fromkeys(kept))
