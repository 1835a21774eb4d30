"""Subscriptions: matching cost per write with 1,000 active subscriptions, and commit-to-delivery latency.

    python -m bench.subscriptions [--runs 5] [--writes 500] [--rate 50] [--out FILE.json]

1,000 subscriptions with varied criteria (token codes, code + subject, subject only, Patient gender +
birthdate, Encounter status, Condition code, quantity thresholds with no index guard, and backport
new-observation topics), all rest-hook to a local aiohttp receiver with the full resource as payload.

- Matching, in-process on a temporary SQLite file: `Dispatcher.match` over the same stream of stored
  Observation writes, with the 1,000 subscriptions registered, against a floor of one subscription on
  Observation (which still pays what any subscription on the type costs: read the version, parse it,
  extract its index entries). Reported per write: median over runs of the total and of total - floor.
- Delivery, against a real `hearth serve` (bench/server.py): a steady stream of POST /Observation at
  `--rate` per second; latency is from the 201 response (the commit) to the notification's arrival at
  the receiver (the first PUT of that Observation), p50 and p99, per run, then medians.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bench.server import HearthProcess

SUBSCRIPTIONS = 1000
CODES = [f"{1000 + i}-{i % 10}" for i in range(200)]
PATIENTS = [f"p{i}" for i in range(100)]
TOPICS = "http://hearth.dev/fhir/SubscriptionTopic"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TARGETS = {"match_ms": ("matching < 1 ms per write", 1.0), "p50_ms": ("p50 delivery < 100 ms", 100.0)}


def criteria_mix(rng: random.Random) -> list[str]:
    """1,000 R4 criteria of varied shapes (50 more are backport topics, see subscription_bodies)."""
    mix = []
    mix += [f"Observation?code=http://loinc.org|{rng.choice(CODES)}" for _ in range(400)]
    mix += [f"Observation?code={rng.choice(CODES)}&subject=Patient/{rng.choice(PATIENTS)}" for _ in range(200)]
    mix += [f"Observation?subject=Patient/{rng.choice(PATIENTS)}" for _ in range(150)]
    mix += [f"Patient?gender={rng.choice(['male', 'female'])}&birthdate=ge19{rng.randint(10, 99)}"
            for _ in range(50)]
    mix += [f"Encounter?status=finished&subject=Patient/{rng.choice(PATIENTS)}" for _ in range(50)]
    mix += [f"Condition?code=http://snomed.info/sct|{rng.randint(1, 500)}" for _ in range(50)]
    mix += [f"Observation?value-quantity=gt{rng.randint(190, 199)}" for _ in range(50)]  # no guard: always run
    return mix


def subscription_bodies(endpoint: str, rng: random.Random) -> list[dict[str, Any]]:
    bodies = [{"resourceType": "Subscription", "status": "requested", "reason": "bench", "criteria": criteria,
               "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"}}
              for criteria in criteria_mix(rng)]
    bodies += [{"resourceType": "Subscription", "meta": {"profile": [f"{BACKPORT}/backport-subscription"]},
                "status": "requested", "reason": "bench", "criteria": f"{TOPICS}/new-observation",
                "_criteria": {"extension": [{"url": f"{BACKPORT}/backport-filter-criteria",
                                             "valueString": f"Observation?subject=Patient/{rng.choice(PATIENTS)}"}]},
                "channel": {"type": "rest-hook", "endpoint": endpoint + "/backport", "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": f"{BACKPORT}/backport-payload-content",
                                                        "valueCode": "id-only"}]}}}
               for _ in range(SUBSCRIPTIONS - len(bodies))]
    return bodies


def observation(rng: random.Random) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": rng.choice(CODES)}]},
            "subject": {"reference": f"Patient/{rng.choice(PATIENTS)}"},
            "effectiveDateTime": "2026-11-24T10:00:00Z",
            "valueQuantity": {"value": rng.randint(40, 200), "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


# --- matching, in-process -------------------------------------------------------------------------

async def matching(writes: int, runs: int) -> dict[str, float]:
    from hearth.interactions.dispatcher import dispatch
    from hearth.interactions.request import SYSTEM, Request
    from hearth.server.settings import Settings
    from hearth.server.wiring import close_context, open_context
    from hearth.subscriptions.dispatcher import Dispatcher
    from hearth.subscriptions.egress import EgressPolicy
    from hearth.subscriptions.model import parse_subscription
    from hearth.subscriptions.registry import Registry

    rng = random.Random(7)
    loopback = EgressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(storage=os.path.join(folder, "match.db"), base_url="http://bench.local/fhir",
                            subscription_allowed_networks="127.0.0.0/8")
        ctx, service = await open_context(settings)
        store = ctx.store
        full, floor = Registry(), Registry()
        for body in subscription_bodies("http://127.0.0.1:9/hook", rng):
            created = await dispatch(ctx, Request("create", SYSTEM, "Subscription", body={**body, "status": "active"}))
            full.put(parse_subscription(ctx, json.loads(created.version.body), 1, loopback))
        only = {**subscription_bodies("http://127.0.0.1:9/hook", rng)[0], "status": "active",
                "criteria": "Observation?code=none"}
        floor.put(parse_subscription(ctx, {**only, "id": "floor"}, 1, loopback))
        for _ in range(writes):
            await dispatch(ctx, Request("create", SYSTEM, "Observation", body=observation(rng)))
        changes = [c for c in await store.changes(0, 100_000) if c.type == "Observation"]
        totals: dict[str, list[float]] = {"full": [], "floor": []}
        events = 0
        for _ in range(runs):
            for name, registry in (("full", full), ("floor", floor)):
                # match() needs neither queue, refresh, stop nor clock (nothing here fails or overruns the budget)
                dispatcher = Dispatcher(ctx, None, registry, None, None, 1.0, None)
                started = time.perf_counter()
                found = 0
                for change in changes:
                    found += len(await dispatcher.match(change))
                totals[name].append((time.perf_counter() - started) / len(changes))
                if name == "full":
                    events = found
        await close_context(ctx, service)
    full_ms = statistics.median(totals["full"]) * 1000
    floor_ms = statistics.median(totals["floor"]) * 1000
    return {"writes": len(changes), "events_per_write": events / len(changes), "total_ms": full_ms,
            "floor_ms": floor_ms, "match_ms": full_ms - floor_ms}


# --- delivery latency against `hearth serve` ------------------------------------------------------

class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        await request.read()
        self.count += 1
        if request.method == "PUT":
            self.arrivals.setdefault(request.path.rsplit("/", 1)[-1], now)
        return web.Response(status=200)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def delivery_run(writes: int, rate: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    os.environ["HEARTH_SUBSCRIPTION_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the server may reach the local receiver
    receiver = Receiver()
    endpoint = await receiver.start() + "/fhir"
    with tempfile.TemporaryDirectory() as folder:
        server = HearthProcess(Path(folder) / "hearth.db", Path(folder) / "server.log")
        server.start()
        try:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                headers = {"Content-Type": "application/fhir+json"}
                for body in subscription_bodies(endpoint, rng):
                    response = await client.post("/Subscription", json=body, headers=headers)
                    response.raise_for_status()
                await asyncio.sleep(2)  # handshakes done, registry loaded
                committed: dict[str, float] = {}
                interval, started = 1.0 / rate, time.monotonic()
                cpu_before = server.cpu_seconds()
                for index in range(writes):
                    await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
                    response = await client.post("/Observation", json=observation(rng), headers=headers)
                    committed[response.json()["id"]] = time.monotonic()
                # not every write matches a subscription: wait until the notifications stop coming
                seen, quiet_since = -1, time.monotonic()
                while time.monotonic() - quiet_since < 2:
                    await asyncio.sleep(0.1)
                    if receiver.count != seen:
                        seen, quiet_since = receiver.count, time.monotonic()
                cpu = server.cpu_seconds() - cpu_before
                elapsed = quiet_since - started  # to the last notification
        except Exception:
            print((Path(folder) / "server.log").read_text()[-3000:])  # the server's side of the failure
            raise
        finally:
            server.stop()
            await receiver.runner.cleanup()
    latencies = [(receiver.arrivals[i] - committed[i]) * 1000 for i in committed if i in receiver.arrivals]
    return {"writes": writes, "notified_writes": len(latencies), "notifications": receiver.count,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "server_cores": cpu / elapsed}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    match = await matching(args.writes, args.runs)
    print(f"matching: {match['match_ms']:.3f} ms per write for {SUBSCRIPTIONS} subscriptions "
          f"(total {match['total_ms']:.3f} ms, floor {match['floor_ms']:.3f} ms, "
          f"{match['events_per_write']:.1f} events per write)")
    runs = []
    for run in range(args.runs):
        result = await delivery_run(args.writes, args.rate, seed=run)
        runs.append(result)
        print(f"delivery run {run + 1}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['notified_writes']}/{result['writes']} writes notified, {result['notifications']} "
              f"notifications, server {result['server_cores']:.2f} cores")
    delivery = {key: statistics.median(r[key] for r in runs) for key in ("p50_ms", "p99_ms", "server_cores")}
    print(f"delivery (median of {args.runs} runs, {args.rate:g} writes/s): p50 {delivery['p50_ms']:.1f} ms, "
          f"p99 {delivery['p99_ms']:.1f} ms")
    for key, (label, limit) in TARGETS.items():
        value = match[key] if key in match else delivery[key]
        print(f"target {label}: {'met' if value < limit else 'MISSED'} ({value:.3f})")
    return {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": vars(args), "matching": match, "delivery_runs": runs, "delivery": delivery}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    report = asyncio.run(main_async(args))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
