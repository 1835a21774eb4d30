"""An `hl7v2-mllp` connector at work: the process that holds its lease listens on its port and converts what its
inbox holds, in arrival order (an A01 before its A03); any process may receive over HTTP (the inbox is shared).
Also what operators ask of it: status, dead letters (retry after a mapping fix, discard), metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from hearth.connectors.hl7v2 import ack
from hearth.connectors.hl7v2.config import Hl7Config
from hearth.connectors.hl7v2.converter import Converter, StoreFailed, message_source
from hearth.connectors.hl7v2.frame import Header, parse_header
from hearth.connectors.hl7v2.maps import maps
from hearth.connectors.hl7v2.mllp import Limits, Listener
from hearth.connectors.hl7v2.receive import Receiver, Settled, message_key
from hearth.connectors.hl7v2.write import Converted
from hearth.connectors.state import LEASE_SECONDS, ConnectorState
from hearth.interactions.context import Context
from hearth.storage import hl7_inbox, leases
from hearth.storage.base import InboxRow, Records
from hearth.storage.clock import to_instant, utc_now

log = logging.getLogger("hearth.connectors.hl7v2")
COUNTERS = ("received", "accepted", "duplicates", "rejected", "errors", "converted", "refused", "stored",
            "unchanged", "dead_lettered")
CLAIM = 50  # rows claimed at once; converted one after another
POLL = 1.0  # seconds between looks at the inbox when nothing woke the converter (rows from other processes)
PURGE_EVERY = 60.0


class Hl7Connector:
    def __init__(self, ctx: Context, config: Hl7Config, records: Records) -> None:
        self.ctx = ctx
        self.config = config
        self.state = ConnectorState(records, config.name, leases(ctx.store))
        self.inbox = hl7_inbox(ctx.store)
        self.settled = Settled()
        self._wake = asyncio.Event()
        self.receiver = Receiver(config, self.inbox, self.settled, self._wake.set)
        self.converter = Converter(ctx, config)
        self.listener: Listener | None = None
        self.listening: str | None = None
        self.running = False
        self.scheduled = False  # it runs in this process
        self._purged = 0.0
        self._saved: Counter[str] = Counter()  # counts already added to the stored status

    # -- running ---------------------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Hold the lease, listen and convert, until cancelled (then the lease is let go); while another process
        holds the lease, wait for it."""
        while True:
            if not await self.state.lease():
                await asyncio.sleep(LEASE_SECONDS / 3)
                continue
            try:
                await self._leased()
            except _LeaseLost:
                log.warning("hl7v2 %s: lease lost: listening and converting stop here", self.config.name)
            finally:
                await self._stop_listening()

    async def one_pass(self) -> None:
        """Convert what is pending now (the caller holds the lease)."""
        await self.inbox.release(self.config.name)
        await self.drain()

    async def _leased(self) -> None:
        await self.inbox.release(self.config.name)  # rows a crashed holder had claimed: not theirs any more
        await self._listen()
        renewer = asyncio.create_task(self._renew())
        try:
            await asyncio.gather(renewer, self._convert_forever())
        finally:
            renewer.cancel()

    async def _renew(self) -> None:
        await self.state.keep_lease(each=self.save_counts)
        raise _LeaseLost()

    async def _listen(self) -> None:
        limits = Limits(self.config.max_message_bytes, self.config.read_timeout)
        listener = Listener(self.receiver.answer, self._too_large, limits)
        try:
            await listener.start(self.config.host, self.config.port)
        except OSError as error:  # the port is taken: conversion (and HTTP receiving) still go on
            message = f"cannot listen on {self.config.host}:{self.config.port}: {error.strerror or error}"
            log.error("hl7v2 %s: %s", self.config.name, message)
            await self.state.record_pass(Counter(), message, "closed")
            return
        self.listener = listener
        self.listening = f"{self.config.host}:{listener.port}"
        log.info("hl7v2 %s: listening on %s", self.config.name, self.listening)

    async def _too_large(self, head: bytes, _reply: Any) -> bytes:
        self.receiver.counts["rejected"] += 1
        return ack.too_large(head, self.config.max_message_bytes, self.config.charset)

    async def _stop_listening(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        self.listener = None
        self.listening = None

    async def _convert_forever(self) -> None:
        pause = POLL
        while True:
            self._wake.clear()
            try:
                await self.drain()
                pause = POLL
            except StoreFailed as error:  # Hearth's own trouble: the rows stay pending, try again later
                log.warning("hl7v2 %s: storing failed, will retry: %s", self.config.name, error)
                pause = min(pause * 2, 30.0)
            except Exception:
                log.exception("hl7v2 %s: conversion crashed", self.config.name)
                pause = min(pause * 2, 30.0)
            if time.monotonic() - self._purged > PURGE_EVERY:
                self._purged = time.monotonic()
                await self.inbox.purge(self.config.name, time.time() - self.config.retention)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def drain(self) -> int:
        """Convert what is pending, in arrival order (`hearth connector run NAME --once`); how many."""
        if not self.config.convert:
            return 0
        done = 0
        self.running = True
        try:
            while rows := await self.inbox.claim(self.config.name, self.state.owner, CLAIM, LEASE_SECONDS):
                self.converter.prepare([row for row in rows if not _merges(row)])
                for row in rows:
                    await self._settle(row, await self._convert(row))
                    done += 1
                await self.save_counts()
        finally:
            self.running = False
            self.converter.forget()
        return done

    async def _convert(self, row: InboxRow) -> Converted:
        try:
            return await self.converter.convert(row)
        except StoreFailed:
            await self.inbox.settle(self.config.name, row.seq, None)  # pending again, its lease ended
            raise

    async def _settle(self, row: InboxRow, outcome: Converted) -> None:
        header = parse_header(row.raw.decode(row.charset), row.charset)
        assert isinstance(header, Header)
        answer = None
        if row.ack is None:  # its sender waits for this answer (merge, ack_after = "conversion", reject mode)
            answer = ack.encode(ack.original_ack(header, outcome.refusal), row.charset)
        if outcome.state == "failed":
            await self.state.dead_letter(f"HL7v2/{row.seq}", outcome.reason or "conversion", outcome.error or "",
                                         message_source(self.config.name, header), row.raw.decode(row.charset))
        await self.inbox.settle(self.config.name, row.seq, outcome.state, ack=answer, error=outcome.error,
                                result={"written": outcome.written} if outcome.written else None)
        self.settled.done(row.key, outcome.refusal, answer)

    async def close(self) -> None:
        await self._stop_listening()
        await self.receiver.close()

    # -- asking ----------------------------------------------------------------------------------------------

    def counts(self) -> Counter[str]:
        return Counter(self.receiver.counts) + self.converter.counts

    async def save_counts(self) -> None:
        """Add this process's counts since the last save to the stored status (any process can read it)."""
        now = self.counts()
        delta = now - self._saved
        if delta:
            self._saved = now
            status = await self.state.add_counts(delta, keys=COUNTERS, save=False)
            if delta["converted"]:
                status["last_success"] = to_instant(utc_now())
                status["state"] = "ok"
            if delta["dead_lettered"]:
                status["last_error"] = {"time": to_instant(utc_now()), "message": "a message became a dead letter"}
            await self.state.save_status(status)

    async def status(self) -> dict[str, Any]:
        await self.save_counts()
        stored = await self.state.status()
        pending, oldest = await self.inbox.counts(self.config.name)
        holder = await self.state.lease_holder()
        lag = round(max(time.time() - oldest, 0.0), 3) if oldest is not None else 0.0
        return {"name": self.config.name, "kind": self.config.kind, "state": stored.get("state", "stopped"),
                "listening": self.listening or stored.get("listening"),
                "last_success": stored.get("last_success"), "last_error": stored.get("last_error"),
                "lag_seconds": lag,
                "checkpoint": {"pending": pending, "oldest_pending": _instant(oldest)},
                "counters": {key: stored.get("counters", {}).get(key, 0) for key in COUNTERS},
                "running_in": holder}

    async def retry(self, letter: dict[str, Any]) -> str:
        """Convert a dead letter's message again with today's maps and configuration."""
        text = letter.get("raw") or ""
        header = parse_header(text, "utf-8")
        row = await self.inbox.get(self.config.name, message_key(header)) if isinstance(header, Header) else None
        if row is None:
            return "kept: its message is no longer in the inbox (past the retention)"
        try:
            outcome = await self.converter.convert(row)
        except StoreFailed as error:
            return f"failed again: kept ({error})"
        await self._settle(row, outcome)
        await self.save_counts()
        if outcome.state == "failed":
            return f"failed again: kept ({outcome.error})"
        await self.state.remove_dead_letter(letter["id"])
        return "stored" if outcome.state == "done" else f"refused: {outcome.error}"

    async def discard(self, letter: dict[str, Any]) -> bool:
        """Drop a dead letter; its message stays failed in the inbox until the retention ends."""
        return await self.state.remove_dead_letter(letter["id"])

    async def metric_samples(self) -> dict[str, list[str]]:
        """Prometheus samples by family (connectors' runner adds HELP and TYPE)."""
        status = await self.status()
        name = self.config.name
        return {
            "hearth_hl7v2_messages_total": [f'hearth_hl7v2_messages_total{{connector="{name}",outcome="{k}"}} {v}'
                                            for k, v in status["counters"].items()],
            "hearth_hl7v2_pending": [f'hearth_hl7v2_pending{{connector="{name}"}} {status["checkpoint"]["pending"]}'],
            "hearth_connector_lag_seconds": [f'hearth_connector_lag_seconds{{connector="{name}"}} '
                                             f'{status["lag_seconds"]}'],
        }


def _merges(row: InboxRow) -> bool:
    """A merge is not converted by the maps (merge.py reads what is stored)."""
    event = maps().event(row.header.get("type", ""), row.header.get("event", ""))
    return event is not None and event.handler == "merge"


class _LeaseLost(Exception):
    pass


def _instant(epoch: float | None) -> str | None:
    return None if epoch is None else to_instant(datetime.fromtimestamp(epoch, timezone.utc))
