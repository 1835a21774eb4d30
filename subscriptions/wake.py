"""How the subscription loops sleep: until something wakes them, or a time limit."""

from __future__ import annotations

import asyncio


async def sleep_until_set(event: asyncio.Event, seconds: float) -> None:
    """Wait until `event` is set or `seconds` have passed, whichever is first."""
    try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel (shutdown hangs)
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
