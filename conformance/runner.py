"""Running one TestScript against a server: autocreate, setup, tests, teardown, autodelete -> a TestReport."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from hearth.capability import fhir_json
from hearth.conformance import asserts
from hearth.conformance.client import Client, Exchange
from hearth.conformance.operations import MEDIA, OperationError, build_request, created_id
from hearth.conformance.report import AssertRecord, ScriptResult, build_report
from hearth.conformance.script import Script
from hearth.conformance.session import Session

_NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class _Section:
    """The actions of one setup / test / teardown as TestReport action entries, plus the assert records."""

    def __init__(self, result: ScriptResult, where: str) -> None:
        self.result, self.where, self.actions = result, where, []

    def operation(self, outcome: str, message: str) -> None:
        self.actions.append({"operation": {"result": outcome, "message": message}})

    def assertion(self, assertion: dict, outcome: str, message: str) -> None:
        label = assertion.get("label") or assertion.get("description") or ""
        self.actions.append({"assert": {"result": outcome, "message": f"{label}: {message}" if label else message}})
        self.result.asserts.append(AssertRecord(self.where, assertion.get("label", ""),
                                                assertion.get("description", ""), outcome, message))


class Runner:
    """Runs TestScripts with one HTTP client; `servers` maps TestScript destinations to base URLs."""

    def __init__(self, client: Client, servers: dict[int, str], given: dict[str, str] | None = None,
                 default_format: str = "json") -> None:
        self.client, self.servers, self.given, self.format = client, servers, given or {}, default_format

    async def run(self, script: Script) -> ScriptResult:
        result = ScriptResult(script, {})
        session = Session(script, self.servers, dict(self.given))
        profiles = {item["id"]: item.get("reference", "") for item in script.resource.get("profile", ())}
        setup = _Section(result, "setup")
        ok = self._load_errors(script, setup) and await self._fetch_remote(script, session, setup)
        created = await self._autocreate(script, session, setup) if ok else []
        ok = ok and len(created) == sum(1 for f in script.resource.get("fixture", ()) if f.get("autocreate"))
        if ok:
            ok = await self._actions((script.resource.get("setup") or {}).get("action", ()), session, setup,
                                     profiles, stop_on_failure=True)
        tests = []
        for test in script.resource.get("test", ()):
            section = _Section(result, f"test {test.get('name', '')}".strip())
            if ok:
                await self._actions(test.get("action", ()), session, section, profiles)
            else:
                for action in test.get("action", ()):
                    self._skip(action, section, "setup failed")
            tests.append({"name": test.get("name", ""), "description": test.get("description", ""),
                          "action": section.actions})
        teardown = _Section(result, "teardown")
        await self._actions((script.resource.get("teardown") or {}).get("action", ()), session, teardown, profiles)
        for identity in created:
            await self._delete(identity, session, teardown)
        result.report = build_report(script, self.servers[1], setup.actions, tests, teardown.actions, result.asserts)
        return result

    @staticmethod
    def _load_errors(script: Script, setup: _Section) -> bool:
        for fixture_id, reason in script.errors.items():
            setup.operation("error", f"fixture '{fixture_id}': {reason}")
        return not script.errors

    async def _fetch_remote(self, script: Script, session: Session, setup: _Section) -> bool:
        """Fixtures named by URL (or by `Type/id` on the server under test), read when the script starts."""
        for fixture_id, reference in script.remote.items():
            url = reference if reference.startswith(("http://", "https://")) else f"{session.base()}/{reference}"
            exchange = Exchange("GET", url, {"Accept": MEDIA["json"]}, None)
            sent = await self._send(exchange, setup, f"fixture {fixture_id}")
            if sent is None or sent.status != 200 or not isinstance(sent.resource, dict):
                setup.operation("error", f"fixture '{fixture_id}' could not be read from {url}")
                return False
            session.fixtures[fixture_id] = sent.resource
        return True

    async def _send(self, exchange: Exchange, section: _Section, what: str) -> Exchange | None:
        try:
            await self.client.send(exchange)
        except _NETWORK_ERRORS as exc:
            section.operation("error", f"{what}: {exchange.method} {exchange.url} failed: {exc!r}")
            return None
        section.operation("pass", f"{what}: {exchange.method} {exchange.url} -> {exchange.status}")
        return exchange

    async def _actions(self, actions: Any, session: Session, section: _Section, profiles: dict[str, str],
                       stop_on_failure: bool = False) -> bool:
        """Run actions in order; an operation that cannot be sent ends the block (so does a setup failure)."""
        ok = True
        for index, action in enumerate(actions):
            if not ok:
                self._skip(action, section, "an earlier action failed")
                continue
            if "operation" in action:
                ok = await self._operation(action["operation"], session, section)
            elif "assert" in action:
                outcome = asserts.evaluate(action["assert"], session, profiles)
                section.assertion(action["assert"], outcome.result, outcome.message)
                ok = not (stop_on_failure and outcome.result in ("fail", "error"))
        return ok

    async def _operation(self, operation: dict, session: Session, section: _Section) -> bool:
        what = operation.get("label") or (operation.get("type") or {}).get("code") or "operation"
        try:
            exchange = build_request(operation, session, self.format)
        except OperationError as exc:
            section.operation("error", f"{what}: {exc}")
            return False
        sent = await self._send(exchange, section, what)
        if sent is None:
            return False
        session.record(sent, operation.get("responseId"), operation.get("requestId"))
        code = (operation.get("type") or {}).get("code")
        if operation.get("sourceId") and code in ("create", "update", "updateCreate") and 200 <= sent.status < 300:
            identity = created_id(sent)
            if identity:
                session.server_ids[operation["sourceId"]] = identity
        return True

    @staticmethod
    def _skip(action: dict, section: _Section, why: str) -> None:
        if "operation" in action:
            section.operation("skip", why)
        elif "assert" in action:
            section.assertion(action["assert"], "skip", why)

    async def _autocreate(self, script: Script, session: Session, setup: _Section) -> list[tuple[str, str]]:
        """Create each autocreate fixture (POST); later references to it use the id the server assigned."""
        created: list[tuple[str, str]] = []
        for fixture in script.resource.get("fixture", ()):
            fixture_id = fixture["id"]
            if not fixture.get("autocreate"):
                continue
            resource = session.fixtures.get(fixture_id)
            if not isinstance(resource, dict) or "resourceType" not in resource:
                setup.operation("error", f"autocreate '{fixture_id}': not a resource")
                break
            body = {key: value for key, value in resource.items() if key not in ("id", "meta")}
            operation = {"type": {"code": "create"}, "resource": resource["resourceType"]}
            exchange = build_request(operation, session, self.format)
            exchange.request_headers["Content-Type"] = MEDIA["json"]
            exchange.request_body = fhir_json.dumps(body)
            sent = await self._send(exchange, setup, f"autocreate {fixture_id}")
            identity = created_id(sent) if sent is not None and 200 <= sent.status < 300 else None
            if identity is None:
                setup.operation("error", f"autocreate '{fixture_id}' was refused")
                break
            session.server_ids[fixture_id] = identity
            created.append(identity)
        return created

    async def _delete(self, identity: tuple[str, str], session: Session, teardown: _Section) -> None:
        url = f"{session.base()}/{identity[0]}/{identity[1]}"
        exchange = Exchange("DELETE", url, {"Accept": MEDIA[self.format]}, None)
        await self._send(exchange, teardown, f"autodelete {identity[0]}/{identity[1]}")
