"""A background step repeated at an interval, surviving its own failures (the follower, the re-index worker)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable


async def every(seconds: float, step: Callable[[], Awaitable[object]], log: logging.Logger, failed: str) -> None:
    """Wait `seconds`, run `step`, and again, until cancelled. A step that fails (the database away for a moment)
    is logged to `log` with `failed` and the next one runs as usual."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(failed)
