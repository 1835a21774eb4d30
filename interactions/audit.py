"""The audit trail the dispatcher reports every interaction to (its implementation: security/audit.py).

`accessed` records an interaction once it is answered or refused (the answer waits until the record is durable);
`for_writes` gives the records a commit stores with its writes, so a write and its record commit together.
`answer` serves the AuditEvent type from the audit log (AuditEvents are never written through the API).

While an interaction runs, the resource versions that leave for its caller (interactions/context.py `released`)
are noted in `shown()`, so its record names every resource a search or history returned.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from hearth.capability.outcome import FhirError
from hearth.interactions.request import Caller, Outcome, Request
from hearth.storage.base import AuditRecord, Version, Write


@dataclass
class Noted:
    """What one interaction showed its caller, and whether it committed (its writes' records went with them)."""

    shown: list[Version] = field(default_factory=list)
    committed: bool = False


_NOTED: ContextVar[Noted | None] = ContextVar("hearth_audit_noted", default=None)


def noting() -> tuple[Noted, object]:
    """Start noting for one interaction; pass the token to `stop_noting`."""
    noted = Noted()
    return noted, _NOTED.set(noted)


def stop_noting(token: object) -> None:
    _NOTED.reset(token)  # type: ignore[arg-type]


def noted() -> Noted | None:
    return _NOTED.get()


class AuditTrail(Protocol):
    async def accessed(self, request: Request, outcome: Outcome | None, error: FhirError | None,
                       noted: Noted) -> None: ...

    def for_writes(self, caller: Caller, writes: Sequence[Write]) -> list[AuditRecord]: ...

    async def answer(self, request: Request) -> Outcome: ...

    async def close(self) -> None: ...


class NoAudit:
    """Nothing is recorded (tests of the interactions alone, the benchmarks' floors)."""

    async def accessed(self, request: Request, outcome: Outcome | None, error: FhirError | None,
                       noted: Noted) -> None:
        return None

    def for_writes(self, caller: Caller, writes: Sequence[Write]) -> list[AuditRecord]:
        return []

    async def answer(self, request: Request) -> Outcome:
        raise FhirError(404, "not-found", "There is no audit log here")

    async def close(self) -> None:
        return None
