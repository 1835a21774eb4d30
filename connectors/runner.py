"""The declared connectors at work: each runs its passes on its schedule (`every`, or `continuous`) under a lease
on its checkpoint, so `hearth connector run NAME --once` and the server never run the same connector's pass at
once; a failing upstream (its circuit open) waits for its next probe while the other connectors carry on. Also
what operators ask of them: status, dead letters (retry, discard), metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError
from hearth.connectors.auth import AuthError
from hearth.connectors.bulk import BulkExport
from hearth.connectors.circuit import Circuit, CircuitOpen
from hearth.connectors.config import ConnectorConfig
from hearth.connectors.identity import Localizer
from hearth.connectors.poll import Poller
from hearth.connectors.state import COUNTERS, LEASE_SECONDS, ConnectorState
from hearth.connectors.sync import Sink, StoreFailed
from hearth.connectors.upstream import Upstream, UpstreamError
from hearth.interactions.context import Context
from hearth.storage.base import Records
from hearth.storage.clock import parse_instant, utc_now

log = logging.getLogger("hearth.connectors")
FAILURES = (UpstreamError, CircuitOpen, StoreFailed, AuthError, FhirError)
_CONTINUOUS_PAUSE = 1.0  # seconds between passes of a `continuous` connector that found nothing to do


class Connector:
    """One declared connector: its upstream (with its circuit), state and the pass its kind runs."""

    def __init__(self, ctx: Context, config: ConnectorConfig, records: Records, circuit: Circuit) -> None:
        self.ctx = ctx
        self.config = config
        self.state = ConnectorState(records, config.name)
        self.circuit = circuit
        self.latency = [0.0, 0]  # seconds, requests: the upstream's request latency (metrics)
        self.upstream = Upstream(config, circuit, observe=self._observe)
        self.localizer = Localizer(config.name, config.base, config.types, config.mask)
        self.poller: Poller | None = None
        self.running = False
        self.last_counts: Counter[str] = Counter()  # the last pass's

    def _observe(self, seconds: float) -> None:
        self.latency[0] += seconds
        self.latency[1] += 1

    def sink(self) -> Sink:
        return Sink(self.ctx, self.state, self.localizer, self.config.conflict)

    async def run_pass(self) -> dict[str, Any]:
        """One pass (under the lease, which the caller holds); its counts and error noted in the status."""
        sink = self.sink()
        error: str | None = None
        self.running = True
        try:
            if self.config.kind == "bulk-export" and not (self.config.then_poll and
                                                          (await self.state.checkpoint()).get("exported")):
                await BulkExport(self.config, self.upstream, sink, self.state).run_pass()
            else:
                if self.poller is None:
                    self.poller = Poller(self.config, self.upstream, sink, self.state)
                self.poller.sink = sink
                await self.poller.run_pass()
        except FAILURES as failure:
            error = str(failure) if not isinstance(failure, FhirError) else failure.diagnostics
            log.warning("connector %s: pass failed: %s", self.config.name, error)
        finally:
            self.running = False
            self.last_counts = sink.counts
        return await self.state.record_pass(sink.counts, error, self.circuit.state)

    async def close(self) -> None:
        await self.upstream.close()


class Connectors:
    """The connectors of one process (the server's, or a CLI command's)."""

    def __init__(self, ctx: Context, configs: dict[str, ConnectorConfig], records: Records) -> None:
        self.ctx = ctx
        self.records = records
        circuits: dict[str, Circuit] = {}  # one per upstream base: connectors to one EHR share its breaker
        self.connectors = {name: Connector(ctx, config, records,
                                           circuits.setdefault(config.base, Circuit(config.base)))
                           for name, config in configs.items()}
        self._tasks: list[asyncio.Task] = []

    def get(self, name: str) -> Connector:
        connector = self.connectors.get(name)
        if connector is None:
            raise KeyError(f"no connector named {name!r} (declared: {', '.join(sorted(self.connectors)) or 'none'})")
        return connector

    async def open(self) -> None:
        await self.records.open()

    # -- running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run every connector's passes in the background, on its schedule."""
        self._tasks = [asyncio.create_task(self._loop(connector), name=f"connector {name}")
                       for name, connector in self.connectors.items()]

    async def stop(self) -> None:
        """Stop the schedule (the connectors it ran say `stopped`) and close the upstream connections."""
        scheduled = bool(self._tasks)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for connector in self.connectors.values():
            if scheduled:
                with contextlib.suppress(Exception):
                    await connector.state.release()
                    await connector.state.mark_stopped()
            await connector.close()

    async def run_once(self, name: str) -> dict[str, Any] | None:
        """One pass of `name` now, under its lease; then its status. None when another process holds the lease."""
        connector = self.get(name)
        if not await connector.state.lease():
            return None
        try:
            await self._leased_pass(connector)
        finally:
            await connector.state.release()
        return await self._status(connector)

    async def run_forever(self, name: str) -> None:
        """`name`'s schedule in this process (`hearth connector run NAME`), until cancelled: then its lease is
        released and it says `stopped`."""
        connector = self.get(name)
        try:
            await self._loop(connector)
        finally:
            with contextlib.suppress(Exception):
                await connector.state.release()
                await connector.state.mark_stopped()

    async def _loop(self, connector: Connector) -> None:
        every = connector.config.every
        while True:
            status = None
            try:
                if await connector.state.lease():
                    status = await self._leased_pass(connector)
            except Exception:  # a bug must not end the connector's schedule: logged, next pass as usual
                log.exception("connector %s: pass crashed", connector.config.name)
            await asyncio.sleep(self._pause(connector, every, status))

    def _pause(self, connector: Connector, every: float | None, status: dict[str, Any] | None) -> float:
        if connector.circuit.state == "open":
            assert connector.circuit.opened_at is not None
            wait = connector.circuit.opened_at + connector.circuit.cooldown - time.monotonic()
            return max(wait, every or _CONTINUOUS_PAUSE)
        if every is not None:
            return every
        busy = status is not None and status.get("state") == "ok" and connector.last_counts["fetched"] > 0
        return 0.0 if busy else _CONTINUOUS_PAUSE  # found something: there may be more

    async def _leased_pass(self, connector: Connector) -> dict[str, Any]:
        """A pass while the lease is renewed; a pass whose lease is lost (another process took it, or it could
        not be renewed) stops, so two processes never write one connector's resources at once."""
        running = asyncio.ensure_future(connector.run_pass())

        async def renew() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 3)
                try:
                    held = await connector.state.lease()
                except Exception:
                    held = False
                if not held:
                    log.warning("connector %s: lease lost: the pass stops", connector.config.name)
                    running.cancel()
                    return
        renewer = asyncio.create_task(renew())
        try:
            return await running
        except asyncio.CancelledError:
            if renewer.done():  # stopped for the lost lease, not cancelled from outside
                return await connector.state.record_pass(connector.last_counts, "lease lost: the pass stopped",
                                                         connector.circuit.state)
            raise
        finally:
            renewer.cancel()
            running.cancel()

    # -- asking ----------------------------------------------------------------------------------------------

    async def status(self, name: str | None = None) -> list[dict[str, Any]]:
        names = [name] if name is not None else sorted(self.connectors)
        return [await self._status(self.get(each)) for each in names]

    async def _status(self, connector: Connector) -> dict[str, Any]:
        stored = await connector.state.status()
        holder = await connector.state.lease_holder()
        last_success = stored.get("last_success")
        lag = None
        if last_success:
            lag = round((utc_now() - parse_instant(last_success)).total_seconds(), 3)
        return {"name": connector.config.name, "kind": connector.config.kind,
                "state": stored.get("state", "stopped"),
                "circuit": connector.circuit.state if self._tasks or connector.running else
                stored.get("circuit", "closed"),
                "last_success": last_success, "last_error": stored.get("last_error"), "lag_seconds": lag,
                "checkpoint": await connector.state.checkpoint(),
                "counters": {key: stored.get("counters", {}).get(key, 0) for key in COUNTERS},
                "running_in": holder.get("holder") if holder else None}

    async def dead_letters(self, name: str, letter_id: str | None = None) -> list[dict[str, Any]]:
        state = self.get(name).state
        if letter_id is None:
            return await state.dead_letters()
        letter = await state.dead_letter_by_id(letter_id)
        return [letter] if letter else []

    async def discard(self, name: str, letter_id: str) -> bool:
        """Drop a dead letter; in a conflict Hearth's version stays (the sync state now starts from it)."""
        connector = self.get(name)
        letter = await connector.state.dead_letter_by_id(letter_id)
        if letter is None:
            return False
        if letter.get("reason") in ("conflict", "deleted-conflict") and letter.get("local"):
            version = int((fhir_json.loads(letter["local"], trusted=True).get("meta") or {}).get("versionId", 0))
            await connector.state.save_synced({letter["key"]: {"local": version, "digest": ""}})
        return await connector.state.remove_dead_letter(letter_id)

    async def retry(self, name: str, letter_id: str | None = None) -> list[dict[str, Any]]:
        """Try dead letters again (one, or all): a conflict applies the upstream's side (its version, or its
        deletion); anything else is fetched again from the upstream (fixed there, it is stored; still wrong, it
        stays, with the new error). A letter is removed only once what it held is settled."""
        connector = self.get(name)
        results = []
        for letter in await self.dead_letters(name, letter_id):
            results.append({"id": letter["id"], "result": await self._retry(connector, letter)})
        return results

    async def _retry(self, connector: Connector, letter: dict[str, Any]) -> str:
        sink = connector.sink()
        reason = letter.get("reason")
        if reason == "malformed":
            return "kept: what names no resource cannot be fetched again; fix it upstream and sync again"
        resource_type, _, upstream_id = letter["key"].partition("/")
        try:
            if reason == "conflict":
                await sink.force(fhir_json.loads(letter["raw"], trusted=True), bool(letter.get("masked")))
            elif reason == "deleted-conflict":
                await sink.remove(resource_type, upstream_id)
            else:
                try:
                    resource = await connector.upstream.get_json(f"{resource_type}/{upstream_id}")
                except UpstreamError as error:
                    if error.status not in (404, 410):
                        raise
                    await connector.state.remove_dead_letter(letter["id"])
                    return "gone upstream: dead letter removed"
                await sink.store([resource])  # failing again, it replaces this letter with the new error
                if sink.counts["dead_lettered"]:
                    return "failed again: kept"
        except FAILURES as failure:
            return f"failed again: kept ({failure})"
        finally:
            await connector.state.add_counts(sink.counts)
        await connector.state.remove_dead_letter(letter["id"])
        return "stored" if reason != "deleted-conflict" else "deleted"

    # -- metrics ---------------------------------------------------------------------------------------------

    async def metric_lines(self) -> list[str]:
        """Prometheus series per connector (server/metrics.py renders them with the others), each family's
        HELP and TYPE right before its samples."""
        statuses = await self.status()
        families = {
            "hearth_connector_resources_total": ("counter", "Resources by connector and outcome (fetched, stored, "
                                                 "unchanged, rejected, dead_lettered, conflicts, deleted)."),
            "hearth_connector_lag_seconds": ("gauge", "Seconds since the connector's last successful pass."),
            "hearth_connector_circuit_open": ("gauge", "1 while the upstream's circuit is open or half-open."),
            "hearth_connector_request_seconds": ("summary", "Upstream request latency."),
        }
        samples: dict[str, list[str]] = {family: [] for family in families}
        for status in statuses:
            name = status["name"]
            samples["hearth_connector_resources_total"] += [
                f'hearth_connector_resources_total{{connector="{name}",outcome="{key}"}} {value}'
                for key, value in status["counters"].items()]
            if status["lag_seconds"] is not None:
                samples["hearth_connector_lag_seconds"].append(
                    f'hearth_connector_lag_seconds{{connector="{name}"}} {status["lag_seconds"]}')
            samples["hearth_connector_circuit_open"].append(
                f'hearth_connector_circuit_open{{connector="{name}",state="{status["circuit"]}"}} '
                f'{0 if status["circuit"] == "closed" else 1}')
            total, count = self.get(name).latency
            samples["hearth_connector_request_seconds"] += [
                f'hearth_connector_request_seconds_sum{{connector="{name}"}} {total!r}',
                f'hearth_connector_request_seconds_count{{connector="{name}"}} {count}']
        lines: list[str] = []
        for family, (kind, text) in families.items():
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", *samples[family]]
        return lines
