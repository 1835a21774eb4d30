"""Running many TestScripts in order and writing their TestReports."""

from __future__ import annotations

import re
from pathlib import Path

from hearth.capability import fhir_json
from hearth.conformance.client import Client
from hearth.conformance.report import ScriptResult
from hearth.conformance.runner import Runner
from hearth.conformance.script import ScriptError, find_scripts, load_script


async def run_suite(paths: list[str], servers: dict[int, str], given: dict[str, str] | None = None,
                    default_format: str = "json", reports: Path | None = None,
                    timeout: float = 60.0, headers: dict[str, str] | None = None) -> list[ScriptResult]:
    """Every TestScript under `paths`, one after another (scripts share the server's state)."""
    scripts = [load_script(path) for path in find_scripts(paths)]
    if not scripts:
        raise ScriptError(f"no TestScripts in {' '.join(paths)}")
    results = []
    async with Client(timeout, headers) as client:
        runner = Runner(client, servers, given, default_format)
        for script in scripts:
            results.append(await runner.run(script))
    if reports is not None:
        reports.mkdir(parents=True, exist_ok=True)
        for result in results:
            name = re.sub(r"[^A-Za-z0-9.-]+", "-", f"{result.script.path.parent.name}-{result.script.path.stem}")
            (reports / f"TestReport-{name}.json").write_bytes(fhir_json.dumps(result.report, pretty=True))
    return results
