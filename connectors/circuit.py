"""A circuit breaker per upstream: after `threshold` failures in a row it opens (no requests) for a cool-down, then
lets one probe through (half-open); the probe's success closes it, its failure opens it again for twice as long
(up to `max_cooldown`). A failing EHR is not hammered, and connectors to other upstreams carry on."""

from __future__ import annotations

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

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() >= self.opened_at + self.cooldown else "open"

    def admit(self) -> None:
        """Before a request: CircuitOpen unless the circuit is closed or this is the half-open probe."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self.probing:
            self.probing = True
            return
        assert self.opened_at is not None
        raise CircuitOpen(self.upstream, max(0.0, self.opened_at + self.cooldown - self.clock()), self.last_failure)

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False
        self.cooldown = self.base_cooldown

    def failed(self) -> None:
        if self.probing:  # the probe failed: open again, for longer
            self.probing = False
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.opened_at = self.clock()
            return
        self.failures += 1
        if self.failures >= self.threshold and self.opened_at is None:
            self.opened_at = self.clock()
