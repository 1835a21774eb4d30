"""Conversion beside the event loop: the engine (convert.py) is pure CPU work, a few milliseconds a message, so
it runs in a worker process of its own. The event loop keeps answering ACKs and writing while a message is being
converted, and conversion uses a core the loop does not. One worker per server process (started on first use,
with `spawn`: a clean interpreter, not a fork of one with running threads); it converts messages one at a time, in
the order asked, and a worker that died is replaced on the next message."""

from __future__ import annotations

import asyncio
import atexit
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any

from hearth.connectors.hl7v2.convert import Conversion, convert

_pool: ProcessPoolExecutor | None = None


def _worker() -> ProcessPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_warm)
    return _pool


def _warm() -> None:
    """In the worker: load the maps before the first message (its conversion is no slower than the others), and
    end with the server (a server killed outright leaves no worker behind)."""
    from hearth.connectors.hl7v2.maps import maps
    maps()
    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()


def _end_with(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def convert_soon(text: str, charset: str, **options: Any) -> asyncio.Future[Conversion]:
    """The conversion of a message, running in the worker (a ConversionError is raised when awaited)."""
    global _pool
    loop = asyncio.get_running_loop()
    try:
        return loop.run_in_executor(_worker(), partial(convert, text, charset, **options))
    except BrokenProcessPool:  # the worker died (killed, out of memory): a new one
        _pool = None
        return loop.run_in_executor(_worker(), partial(convert, text, charset, **options))


@atexit.register
def _stop() -> None:
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
