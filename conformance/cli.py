"""`hearth conformance run`: TestScripts against any FHIR server, a TestReport per script, a summary table."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction) -> None:
    conformance = commands.add_parser("conformance", help="run FHIR TestScripts against a FHIR server")
    actions = conformance.add_subparsers(dest="conformance_command", required=True)
    run = actions.add_parser("run", help="run TestScripts (JSON or XML files, or folders of them)")
    run.add_argument("paths", nargs="+", metavar="PATH", help="TestScript files or folders (fixtures/ skipped)")
    run.add_argument("--server", required=True, help="the FHIR base URL under test, e.g. http://localhost:8080")
    run.add_argument("--destination", action="append", default=[], metavar="N=URL",
                     help="base URL of TestScript destination N (multi-server scripts; default: --server)")
    run.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                     help="value of a TestScript variable the script leaves to the tester")
    run.add_argument("--format", choices=("json", "xml"), default="json",
                     help="format when an operation names no accept/contentType (default json)")
    run.add_argument("--reports", default="conformance-reports", metavar="DIR",
                     help="folder for the TestReport of each script (default ./conformance-reports)")
    run.add_argument("--header", action="append", default=[], metavar="NAME:VALUE",
                     help="a header for every request, e.g. 'Authorization: Bearer …' (repeatable)")
    run.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    run.set_defaults(run=_run)


def _pairs(values: list[str], flag: str, separator: str = "=") -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, text = value.partition(separator)
        if not sep:
            raise SystemExit(f"hearth conformance run: {flag} expects NAME{separator}VALUE, got '{value}'")
        pairs[name.strip()] = text.strip() if separator == ":" else text
    return pairs


def _run(args: argparse.Namespace) -> int:
    from hearth.conformance.suite import run_suite
    from hearth.conformance.script import ScriptError

    servers = {1: args.server.rstrip("/")}
    servers.update({int(n): url.rstrip("/") for n, url in _pairs(args.destination, "--destination").items()})
    try:
        results = asyncio.run(run_suite(args.paths, servers, _pairs(args.var, "--var"), args.format,
                                        Path(args.reports), args.timeout, _pairs(args.header, "--header", ":")))
    except ScriptError as exc:
        print(f"hearth conformance run: {exc}", file=sys.stderr)
        return 2
    from hearth.conformance.report import summary_table
    print(summary_table(results))
    for result in results:
        for record in result.asserts:
            if record.result in ("fail", "error"):
                print(f"{record.result.upper()} {result.script.name} [{record.where}] "
                      f"{record.label or record.description}: {record.message}")
    print(f"TestReports in {args.reports}/", file=sys.stderr)
    return 1 if any(result.report["result"] == "fail" for result in results) else 0
