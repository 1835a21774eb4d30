"""A connector that pulls from an upstream FHIR server (kinds `fhir-poll` and `bulk-export`): its passes on its
schedule (`every`, or `continuous`) under a lease on its checkpoint, so `hearth connector run NAME --once` and
the server never run the same connector's pass at once; a failing upstream (its circuit open) waits for its next
probe. Also its status, dead letters and metrics."""

from __future__ import annotations

import asyncio
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
from hearth.connectors.state import COUNTERS, ConnectorState
from hearth.connectors.sync import Sink, StoreFailed
from hearth.connectors.upstream import Upstream, UpstreamError
from hearth.interactions.context import Context
from hearth.storage import leases
from hearth.storage.base import LeaseLost, Records
from hearth.storage.clock import parse_instant, utc_now

log = logging.getLogger("hearth.connectors")
# LeaseLost: the pass's checkpoint was refused, its lease being lost (the process paused past it)
FAILURES = (UpstreamError, CircuitOpen, StoreFailed, AuthError, FhirError, LeaseLost)
_CONTINUOUS_PAUSE = 1.0  # seconds between passes of a `continuous` connector that found nothing to do


class Connector:
    """One declared upstream connector: its upstream (with its circuit), state and the pass its kind runs."""

    def __init__(self, ctx: Context, config: ConnectorConfig, records: Records, circuit: Circuit) -> None:
        self.ctx = ctx
        self.config = config
        self.state = ConnectorState(records, config.name, leases(ctx.store))
        self.circuit = circuit
        self.latency = [0.0, 0]  # seconds, requests: the upstream's request latency (metrics)
        self.upstream = Upstream(config, circuit, observe=self._observe)
        self.localizer = Localizer(config.name, config.base, config.types, config.mask)
        self.poller: Poller | None = None
        self.running = False
        self.scheduled = False  # its schedule runs in this process
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

    # -- running ---------------------------------------------------------------------------------------------

    async def one_pass(self) -> None:
        """One pass now (the caller holds the lease)."""
        await self._leased_pass()

    async def serve(self) -> None:
        """The schedule, until cancelled."""
        every = self.config.every
        while True:
            status = None
            try:
                if await self.state.lease():
                    status = await self._leased_pass()
            except Exception:  # a bug must not end the connector's schedule: logged, next pass as usual
                log.exception("connector %s: pass crashed", self.config.name)
            await asyncio.sleep(self._pause(every, status))

    def _pause(self, every: float | None, status: dict[str, Any] | None) -> float:
        if self.circuit.state == "open":
            assert self.circuit.opened_at is not None
            wait = self.circuit.opened_at + self.circuit.cooldown - time.monotonic()
            return max(wait, every or _CONTINUOUS_PAUSE)
        if every is not None:
            return every
        busy = status is not None and status.get("state") == "ok" and self.last_counts["fetched"] > 0
        return 0.0 if busy else _CONTINUOUS_PAUSE  # found something: there may be more

    async def _leased_pass(self) -> dict[str, Any]:
        """A pass while the lease is renewed; a pass whose lease is lost (another process took it, or it could
        not be renewed) stops, so two processes never write one connector's resources at once."""
        running = asyncio.ensure_future(self.run_pass())

        async def renew() -> None:
            await self.state.keep_lease()
            log.warning("connector %s: lease lost: the pass stops", self.config.name)
            running.cancel()
        renewer = asyncio.create_task(renew())
        try:
            return await running
        except asyncio.CancelledError:
            if renewer.done():  # stopped for the lost lease, not cancelled from outside
                return await self.state.record_pass(self.last_counts, "lease lost: the pass stopped",
                                                    self.circuit.state)
            raise
        finally:
            renewer.cancel()
            running.cancel()

    # -- asking ----------------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        stored = await self.state.status()
        holder = await self.state.lease_holder()
        last_success = stored.get("last_success")
        lag = None
        if last_success:
            lag = round((utc_now() - parse_instant(last_success)).total_seconds(), 3)
        return {"name": self.config.name, "kind": self.config.kind,
                "state": stored.get("state", "stopped"),
                "circuit": self.circuit.state if self.scheduled or self.running else
                stored.get("circuit", "closed"),
                "last_success": last_success, "last_error": stored.get("last_error"), "lag_seconds": lag,
                "checkpoint": await self.state.checkpoint(),
                "counters": {key: stored.get("counters", {}).get(key, 0) for key in COUNTERS},
                "running_in": holder}

    async def discard(self, letter: dict[str, Any]) -> bool:
        """Drop a dead letter; in a conflict Hearth's version stays (the sync state now starts from it)."""
        if letter.get("reason") in ("conflict", "deleted-conflict") and letter.get("local"):
            version = int((fhir_json.loads(letter["local"], trusted=True).get("meta") or {}).get("versionId", 0))
            await self.state.save_synced({letter["key"]: {"local": version, "digest": ""}})
        return await self.state.remove_dead_letter(letter["id"])

    async def retry(self, letter: dict[str, Any]) -> str:
        """A conflict applies the upstream's side (its version, or its deletion); anything else is fetched again
        from the upstream (fixed there, it is stored; still wrong, it stays, with the new error). A letter is
        removed only once what it held is settled."""
        sink = self.sink()
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
                    resource = await self.upstream.get_json(f"{resource_type}/{upstream_id}")
                except UpstreamError as error:
                    if error.status not in (404, 410):
                        raise
                    await self.state.remove_dead_letter(letter["id"])
                    return "gone upstream: dead letter removed"
                await sink.store([resource])  # failing again, it replaces this letter with the new error
                if sink.counts["dead_lettered"]:
                    return "failed again: kept"
        except FAILURES as failure:
            return f"failed again: kept ({failure})"
        finally:
            await self.state.add_counts(sink.counts)
        await self.state.remove_dead_letter(letter["id"])
        return "stored" if reason != "deleted-conflict" else "deleted"

    async def metric_samples(self) -> dict[str, list[str]]:
        """Prometheus samples by family (the runner adds HELP and TYPE)."""
        status = await self.status()
        name = self.config.name
        total, count = self.latency
        samples = {
            "hearth_connector_resources_total": [
                f'hearth_connector_resources_total{{connector="{name}",outcome="{key}"}} {value}'
                for key, value in status["counters"].items()],
            "hearth_connector_circuit_open": [
                f'hearth_connector_circuit_open{{connector="{name}",state="{status["circuit"]}"}} '
                f'{0 if status["circuit"] == "closed" else 1}'],
            "hearth_connector_request_seconds": [
                f'hearth_connector_request_seconds_sum{{connector="{name}"}} {total!r}',
                f'hearth_connector_request_seconds_count{{connector="{name}"}} {count}'],
        }
        if status["lag_seconds"] is not None:
            samples["hearth_connector_lag_seconds"] = [
                f'hearth_connector_lag_seconds{{connector="{name}"}} {status["lag_seconds"]}']
        return samples
