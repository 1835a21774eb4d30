"""FhirError, the one exception every layer raises, and OperationOutcome resources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    severity: str  # fatal | error | warning | information
    code: str  # an IssueType code: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


class FhirError(Exception):
    """An error a client caused or should see: an HTTP status and the issues that explain it."""

    def __init__(self, status: int, code: str, diagnostics: str, expression: tuple[str, ...] | list[str] = (),
                 issues: list[Issue] | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.issues = issues or [Issue("error", code, diagnostics, tuple(expression))]
        self.headers = headers or {}

    @property
    def diagnostics(self) -> str:
        return "; ".join(issue.diagnostics for issue in self.issues)

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource holding `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome with a single informational issue (e.g. for `Prefer: return=OperationOutcome`)."""
    return operation_outcome([Issue("information", code, diagnostics)])


def not_found(resource_type: str, resource_id: str) -> FhirError:
    return FhirError(404, "not-found", f"{resource_type}/{resource_id} is not known")


def gone(resource_type: str, resource_id: str, version_id: int) -> FhirError:
    return FhirError(410, "deleted", f"{resource_type}/{resource_id} was deleted (version {version_id})")


def invalid(diagnostics: str, expression: tuple[str, ...] | list[str] = (), status: int = 400,
            code: str = "invalid") -> FhirError:
    return FhirError(status, code, diagnostics, tuple(expression))
