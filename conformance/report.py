"""TestReport resources and the summary table."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from hearth.conformance.script import Script

TESTER = "Hearth conformance runner"


@dataclass(frozen=True)
class AssertRecord:
    where: str  # "setup", "test <name>" or "teardown"
    label: str
    description: str
    result: str  # pass | fail | warning | error | skip
    message: str


@dataclass
class ScriptResult:
    """A script run: its TestReport and every assert's record."""

    script: Script
    report: dict
    asserts: list[AssertRecord] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(1 for record in self.asserts if record.result == result)


def build_report(script: "Script", server: str, setup: list[dict], tests: list[dict], teardown: list[dict],
                records: list[AssertRecord]) -> dict:
    """An R4 TestReport: fail when any assert failed or any action errored; score = passed / judged asserts."""
    actions = setup + [action for test in tests for action in test["action"]] + teardown
    bad = any(next(iter(action.values()))["result"] in ("fail", "error") for action in actions)
    judged = [record for record in records if record.result != "skip"]
    passed = sum(1 for record in judged if record.result in ("pass", "warning"))
    score = Decimal(100) if not judged else (Decimal(100 * passed) / len(judged)).quantize(Decimal("0.1"))
    report: dict = {
        "resourceType": "TestReport",
        "name": script.name,
        "status": "completed",
        "testScript": {"reference": f"TestScript/{script.resource['id']}" if script.resource.get("id") else None,
                       "display": str(script.path)},
        "result": "fail" if bad else "pass",
        "score": score,
        "tester": TESTER,
        "issued": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "participant": [{"type": "test-engine", "uri": "urn:hearth:conformance"}, {"type": "server", "uri": server}],
    }
    if report["testScript"]["reference"] is None:
        del report["testScript"]["reference"]
    if setup:
        report["setup"] = {"action": setup}
    tests = [test for test in tests if test["action"]]
    if tests:
        report["test"] = [{key: value for key, value in test.items() if value} for test in tests]
    if teardown:
        report["teardown"] = {"action": [action for action in teardown if "operation" in action]}
    return report


def summary_table(results: Iterable[ScriptResult]) -> str:
    """A Markdown table: one row per script with its assert counts, and a total."""
    rows = [("TestScript", "result", "pass", "fail", "warning", "error", "skip")]
    totals = [0, 0, 0, 0, 0]
    for result in results:
        counts = [result.count(kind) for kind in ("pass", "fail", "warning", "error", "skip")]
        totals = [a + b for a, b in zip(totals, counts)]
        path = result.script.path  # names repeat across suites; folder/file does not
        rows.append((f"{path.parent.name}/{path.name}", result.report["result"], *map(str, counts)))
    rows.append(("**total**", "", *map(str, totals)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)
