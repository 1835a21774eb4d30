"""The declared connectors of one process (the server's, or a CLI command's): each runs in the background on its
own (connectors/fhir_connector.py for upstream FHIR servers, connectors/hl7v2/connector.py for HL7 v2 feeds),
and operators ask them the same things whatever their kind: status, dead letters (retry, discard), metrics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from hearth.connectors.circuit import Circuit
from hearth.connectors.config import ConnectorConfig
from hearth.connectors.fhir_connector import Connector
from hearth.connectors.hl7v2.config import Hl7Config
from hearth.connectors.hl7v2.connector import Hl7Connector
from hearth.interactions.context import Context
from hearth.storage.base import Records

AnyConnector = Connector | Hl7Connector
METRIC_FAMILIES = {
    "hearth_connector_resources_total": ("counter", "Resources by connector and outcome (fetched, stored, "
                                         "unchanged, rejected, dead_lettered, conflicts, deleted)."),
    "hearth_connector_lag_seconds": ("gauge", "Seconds since the connector's last successful pass (HL7 v2: the "
                                     "age of the oldest message not converted yet)."),
    "hearth_connector_circuit_open": ("gauge", "1 while the upstream's circuit is open or half-open."),
    "hearth_connector_request_seconds": ("summary", "Upstream request latency."),
    "hearth_hl7v2_messages_total": ("counter", "HL7 v2 messages by connector and outcome (received, accepted, "
                                    "duplicates, rejected, errors, converted, refused, stored, unchanged, "
                                    "dead_lettered)."),
    "hearth_hl7v2_pending": ("gauge", "HL7 v2 messages received and not converted yet."),
}


class Connectors:
    def __init__(self, ctx: Context, configs: dict[str, ConnectorConfig | Hl7Config], records: Records) -> None:
        self.ctx = ctx
        self.records = records
        circuits: dict[str, Circuit] = {}  # one per upstream base: connectors to one EHR share its breaker
        self.connectors: dict[str, AnyConnector] = {
            name: Hl7Connector(ctx, config, records) if isinstance(config, Hl7Config) else
            Connector(ctx, config, records, circuits.setdefault(config.base, Circuit(config.base)))
            for name, config in configs.items()}
        self._tasks: list[asyncio.Task] = []

    def get(self, name: str) -> AnyConnector:
        connector = self.connectors.get(name)
        if connector is None:
            raise KeyError(f"no connector named {name!r} (declared: {', '.join(sorted(self.connectors)) or 'none'})")
        return connector

    async def open(self) -> None:
        await self.records.open()
        for connector in self.connectors.values():
            if isinstance(connector, Hl7Connector):
                await connector.inbox.open()

    # -- running ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Run every connector in the background."""
        for connector in self.connectors.values():
            connector.scheduled = True
        self._tasks = [asyncio.create_task(connector.serve(), name=f"connector {name}")
                       for name, connector in self.connectors.items()]

    async def stop(self) -> None:
        """Stop them (those that ran say `stopped`) and close their connections."""
        scheduled = bool(self._tasks)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for connector in self.connectors.values():
            await connector.close()
            if scheduled:
                connector.scheduled = False
                with contextlib.suppress(Exception):
                    await self._stopped(connector)

    async def _stopped(self, connector: AnyConnector) -> None:
        if isinstance(connector, Hl7Connector):
            await connector.save_counts()
        await connector.state.release()
        await connector.state.mark_stopped()

    async def run_once(self, name: str) -> dict[str, Any] | None:
        """One pass of `name` now (an HL7 v2 connector: convert what is pending), under its lease; then its
        status. None when another process holds the lease."""
        connector = self.get(name)
        if not await connector.state.lease():
            return None
        try:
            await connector.one_pass()
        finally:
            await connector.state.release()
        return await connector.status()

    async def run_forever(self, name: str) -> None:
        """`name` in this process (`hearth connector run NAME`), until cancelled: then its lease is released and
        it says `stopped`."""
        connector = self.get(name)
        connector.scheduled = True
        try:
            await connector.serve()
        finally:
            connector.scheduled = False
            await connector.close()
            with contextlib.suppress(Exception):
                await self._stopped(connector)

    # -- asking ----------------------------------------------------------------------------------------------

    async def status(self, name: str | None = None) -> list[dict[str, Any]]:
        names = [name] if name is not None else sorted(self.connectors)
        return [await self.get(each).status() for each in names]

    async def dead_letters(self, name: str, letter_id: str | None = None) -> list[dict[str, Any]]:
        state = self.get(name).state
        if letter_id is None:
            return await state.dead_letters()
        letter = await state.dead_letter_by_id(letter_id)
        return [letter] if letter else []

    async def discard(self, name: str, letter_id: str) -> bool:
        connector = self.get(name)
        letter = await connector.state.dead_letter_by_id(letter_id)
        return letter is not None and await connector.discard(letter)

    async def retry(self, name: str, letter_id: str | None = None) -> list[dict[str, Any]]:
        """Try dead letters again (one, or all), each as its connector's kind does."""
        connector = self.get(name)
        return [{"id": letter["id"], "result": await connector.retry(letter)}
                for letter in await self.dead_letters(name, letter_id)]

    async def metric_lines(self) -> list[str]:
        """Prometheus series per connector (server/metrics.py renders them with the others), each family's
        HELP and TYPE right before its samples."""
        samples: dict[str, list[str]] = {family: [] for family in METRIC_FAMILIES}
        for name in sorted(self.connectors):
            for family, lines in (await self.connectors[name].metric_samples()).items():
                samples[family] += lines
        lines: list[str] = []
        for family, (kind, text) in METRIC_FAMILIES.items():
            if samples[family]:
                lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", *samples[family]]
        return lines
