"""A circuit breaker per upstream: after `threshold` failures in a row it opens (no requests) for a cool-down, then
lets one probe through (half-open); the probe's success closes it, its failure opens it again for twice as long
(up to `max_cooldown`). A failing EHR is not hammered, and connectors to other upstreams carry on."""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Literal

State = Literal["closed", "open", "half-open"]


class CircuitOpen(Exception):
    """The upstream's circuit is open: no request is sent until `retry_at` (monotonic seconds)."""

    def __init__(self, upstream: str, retry_in: float, last_failure: str) -> None:
        super().__init__(f"circuit open for {upstream}: the upstream failed repeatedly (last: {last_failure}); "
                         f"next probe in {retry_in:.0f} s")
        self.retry_in = retry_in


class Circuit:
    def __init__(self, upstream: str, threshold: int = 5, cooldown: float = 30.0, max_cooldown: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.failures = 0
        self.cooldown = cooldown
        self.opened_at: float | None = None
        self.probing = False
        self.last_failure = ""  # what the last failed request met, said while the circuit is open
        self._verdict = asyncio.Event()  # set when the probe out has its verdict

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() >= self.opened_at + self.cooldown else "open"

    async def admit(self) -> bool:
        """Before a request: CircuitOpen unless the circuit is closed or this is the half-open probe (True: it is;
        the caller then calls `release` once the request is over, whatever became of it). While a probe is out,
        other requests wait for its verdict rather than failing (they would end the pass that sent the probe)."""
        while True:
            state = self.state
            if state == "closed":
                return False
            if state == "half-open":
                if not self.probing:
                    self.probing = True
                    self._verdict = asyncio.Event()
                    return True
                await self._verdict.wait()
                continue
            assert self.opened_at is not None
            raise CircuitOpen(self.upstream, max(0.0, self.opened_at + self.cooldown - self.clock()),
                              self.last_failure)

    def release(self, probe: bool) -> None:
        """The request admitted as the probe is over: if it ended without a verdict (cancelled, a 401 to renew a
        token, an error of Hearth's own), the next request may probe instead of the circuit staying half-open."""
        if probe and self.probing:
            self.probing = False
            self._verdict.set()

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False
        self.cooldown = self.base_cooldown
        self._verdict.set()

    def failed(self) -> None:
        if self.probing:  # the probe failed: open again, for longer
            self.probing = False
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.opened_at = self.clock()
            self._verdict.set()
            return
        self.failures += 1
        if self.failures >= self.threshold and self.opened_at is None:
            self.opened_at = self.clock()
