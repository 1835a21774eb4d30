"""What a connector keeps between passes and across restarts, in the store's `connector_records` (both backends):

- `checkpoint`: how far it has synced, per resource type (and a bulk export in progress);
- `sync:NAME`: per upstream resource (`Type/id`), the local version it wrote and a digest of what it wrote, so
  an unchanged resource costs no write and a resource changed in Hearth since is a conflict;
- `dead:NAME`: what could not be stored (invalid, refused, conflicting), with the raw upstream JSON, the error
  and the upstream URL, for a person to see, retry or discard; one per upstream resource (the latest);
- `status`: counters, last success and error, circuit state, for `hearth connector status` in any process;
and, in the store's leases (storage/*/leases.py, judged by the store's clock), `connector:NAME`: which process runs
the connector's passes now (the server's group leader, or `hearth connector run --once`); its token fences the
checkpoint.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, Awaitable, Callable

from hearth.storage.base import Lease, Leases, Records
from hearth.storage.clock import to_instant, utc_now
from hearth.storage.owners import new_owner, take_lease

COUNTERS = ("fetched", "stored", "unchanged", "rejected", "dead_lettered", "conflicts", "deleted")
LEASE_SECONDS = 60.0


class ConnectorState:
    def __init__(self, records: Records, name: str, leases: Leases) -> None:
        self.records = records
        self.name = name
        self.leases = leases
        self.lease_name = f"connector:{name}"
        self.owner = new_owner()
        self.held: Lease | None = None

    # -- checkpoint -------------------------------------------------------------------------------------------

    async def checkpoint(self) -> dict[str, Any]:
        return await self.records.get("checkpoint", self.name) or {}

    async def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save under the lease: a pass whose lease was lost (a paused process, taken over) raises LeaseLost and
        cannot move the checkpoint past what its successor saved."""
        await self.records.put("checkpoint", self.name, checkpoint, fence=self.held)

    # -- per-resource sync state ------------------------------------------------------------------------------

    async def synced(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        return await self.records.get_many(f"sync:{self.name}", keys)

    async def save_synced(self, documents: dict[str, dict[str, Any]]) -> None:
        await self.records.put_many(f"sync:{self.name}", documents)

    async def forget_synced(self, key: str) -> None:
        await self.records.delete(f"sync:{self.name}", key)

    # -- dead letters -----------------------------------------------------------------------------------------

    async def dead_letter(self, key: str, reason: str, error: str, url: str, raw: str | None,
                          local: str | None = None, masked: bool = False) -> dict[str, Any]:
        """Keep what could not be stored under `key` (`Type/id` upstream: the latest replaces an earlier one):
        `raw` the upstream resource's JSON text (`masked`: without the connector's masked elements; none for a
        deletion), `local` Hearth's version's (a conflict)."""
        letter: dict[str, Any] = {"id": dead_letter_id(key), "connector": self.name, "key": key, "reason": reason,
                                  "error": error, "url": url, "time": to_instant(utc_now())}
        for name, value in (("raw", raw), ("local", local)):
            if value is not None:
                letter[name] = value
        if masked:
            letter["masked"] = True
        await self.records.put(f"dead:{self.name}", letter["id"], letter)
        return letter

    async def dead_letters(self, limit: int | None = None) -> list[dict[str, Any]]:
        return await self.records.list(f"dead:{self.name}", limit)

    async def dead_letter_by_id(self, letter_id: str) -> dict[str, Any] | None:
        return await self.records.get(f"dead:{self.name}", letter_id)

    async def remove_dead_letter(self, letter_id: str) -> bool:
        return await self.records.delete(f"dead:{self.name}", letter_id)

    # -- status -----------------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return await self.records.get("status", self.name) or {"counters": {key: 0 for key in COUNTERS}}

    async def record_pass(self, counts: Counter[str], error: str | None, circuit: str) -> dict[str, Any]:
        """Add a pass's counts; note its success or its error."""
        status = await self.add_counts(counts, save=False)
        now = to_instant(utc_now())
        if error is None:
            status["last_success"] = now
            status["state"] = "ok"
        else:
            status["last_error"] = {"time": now, "message": error[:2000]}
            status["state"] = "failing"
        status["circuit"] = circuit
        await self.records.put("status", self.name, status)
        return status

    async def mark_stopped(self) -> None:
        status = await self.status()
        status["state"] = "stopped"
        await self.records.put("status", self.name, status)

    async def add_counts(self, counts: Counter[str], save: bool = True,
                         keys: tuple[str, ...] = COUNTERS) -> dict[str, Any]:
        """Add counts made outside a pass (a dead letter retried); `keys` are the kind's counters."""
        status = await self.status()
        counters = status.setdefault("counters", {})
        for key in keys:
            counters[key] = counters.get(key, 0) + counts.get(key, 0)
        if save:
            await self.save_status(status)
        return status

    async def save_status(self, status: dict[str, Any]) -> None:
        await self.records.put("status", self.name, status)

    # -- lease ------------------------------------------------------------------------------------------------

    async def lease(self, seconds: float = LEASE_SECONDS) -> bool:
        """Take (or renew) the lease on this connector's passes; False while another process holds it. A holder
        of this machine that no longer runs (it crashed) is not waited out."""
        self.held = await take_lease(self.leases, self.lease_name, self.owner, seconds)
        return self.held is not None

    async def keep_lease(self, each: Callable[[], Awaitable[None]] | None = None) -> None:
        """Renew the lease every third of its time (and run `each` then); return when it is lost (another process
        took it, or it could not be renewed)."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            token = self.held.token if self.held is not None else None
            try:
                held = await self.lease()
            except Exception:
                held = False
            if not held or self.held is None or self.held.token != token:  # (taken by another in between)
                return
            if each is not None:
                await each()

    async def release(self) -> None:
        held, self.held = self.held, None
        if held is not None:
            await self.leases.release(held)

    async def lease_holder(self) -> str | None:
        """The owner id of the process running the connector's passes now, if any."""
        holder = await self.leases.holder(self.lease_name)
        return holder.owner if holder is not None and holder.until > await self.leases.now() else None


def dead_letter_id(key: str) -> str:
    """`Observation/abc` -> `Observation-abc` (a type has no '-', so it splits back at the first one)."""
    return key.replace("/", "-", 1)
