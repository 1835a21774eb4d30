"""Helpers for the subscription tests: a local notification receiver and Subscription bodies."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiohttp import web

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPICS = "http://hearth.dev/fhir/SubscriptionTopic"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


WAIT = 30.0  # seconds a test waits for what should happen within milliseconds: a bound, never a measure


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Wait until `condition()` holds (checked every 20 ms); AssertionError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        held = condition()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.1 recording every request; `fail` answers that many with 503 first;
    `redirect` answers every request but those to that path with a 302 to it."""

    port: int = 0
    fail: int = 0
    always_fail: bool = False
    redirect: str | None = None
    received: list[Received] = field(default_factory=list)
    attempt_times: list[float] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.attempt_times)

    async def start(self) -> "Receiver":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.attempt_times.append(time.monotonic())
        if self.redirect is not None and request.path != self.redirect:
            return web.Response(status=302, headers={"Location": self.url + self.redirect})
        if self.always_fail or self.fail > 0:
            self.fail -= 1
            return web.Response(status=503)
        self.received.append(Received(request.method, request.path, dict(request.headers), await request.read(),
                                      time.monotonic()))
        return web.Response(status=200)

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[Received]:
        try:
            await wait_until(lambda: len(self.received) >= count, f"{count} notifications", timeout)
        except AssertionError:
            raise AssertionError(f"expected {count} notifications, got {len(self.received)}: "
                                 f"{[(r.method, r.path) for r in self.received]}") from None
        return self.received


def r4_subscription(criteria: str, endpoint: str, payload: str | None = None, headers: list[str] | None = None,
                    channel_type: str = "rest-hook") -> dict:
    channel: dict[str, Any] = {"type": channel_type}
    if channel_type == "rest-hook":
        channel["endpoint"] = endpoint
    if payload:
        channel["payload"] = payload
    if headers:
        channel["header"] = headers
    return {"resourceType": "Subscription", "status": "requested", "reason": "test", "criteria": criteria,
            "channel": channel}


def backport_subscription(topic: str, filters: list[str], endpoint: str, content: str = "id-only",
                          heartbeat: int | None = None, channel_type: str = "rest-hook") -> dict:
    channel: dict[str, Any] = {"type": channel_type, "payload": "application/fhir+json",
                               "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                           "valueCode": content}]}}
    if channel_type == "rest-hook":
        channel["endpoint"] = endpoint
    if heartbeat:
        channel["extension"] = [{"url": f"{BACKPORT}/backport-heartbeat-period", "valueUnsignedInt": heartbeat}]
    subscription = {"resourceType": "Subscription", "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
                    "status": "requested", "reason": "test", "criteria": f"{TOPICS}/{topic}", "channel": channel}
    if filters:
        subscription["_criteria"] = {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria", "valueString": f}
                                                   for f in filters]}
    return subscription


def status_of(bundle: dict) -> dict[str, Any]:
    """The SubscriptionStatus Parameters leading a notification Bundle, as {name: value or [parts]}."""
    parameters = bundle["entry"][0]["resource"]
    assert parameters["resourceType"] == "Parameters"
    found: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        if "part" in parameter:
            found.setdefault(parameter["name"], []).append(
                {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]})
        else:
            found[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return found
