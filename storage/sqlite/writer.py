"""The server's side of the SQLite writer process (storage/sqlite/writer_process.py): starts it, sends it jobs,
settles each job's future with its outcome."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("hearth.storage.sqlite")


class Writer:
    """The server's side of the writer process, on the event loop: frames jobs onto a socket, reads outcomes.

    No thread in between: a hand-over between threads waits for the interpreter lock, which a busy event loop
    holds for up to the switch interval (5 ms), and those waits left both processes idle a third of the time.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.numbers = itertools.count()
        self._spawn()

    def _spawn(self) -> None:
        self.socket, child = socket.socketpair()
        # a fresh interpreter (`python -m hearth.storage.sqlite.writer_process`), not a fork: forking a process with threads
        # can leave the child holding locks no thread will release, and multiprocessing's spawn re-runs __main__
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with child:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hearth.storage.sqlite.writer_process", str(child.fileno()), self.path,
                 self.synchronous], pass_fds=[child.fileno()], env=env, stdin=subprocess.DEVNULL)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.connecting: asyncio.Task | None = None
        self.stream: asyncio.StreamWriter | None = None
        self.reading: asyncio.Task | None = None
        self.waiting: dict[int, asyncio.Future] = {}  # this process's jobs, by number

    async def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(connection, *args)` in the writer process; its result once its group has committed."""
        await self._connected()
        number = next(self.numbers)
        # pickled first, so that a job that does not pickle fails here, alone; and on its own, so that one the
        # writer process cannot unpickle (its function is in a module it cannot import) fails there, alone
        frame = _frame([(number, pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL))])
        future = self.waiting[number] = self.loop.create_future()
        self.stream.write(frame)
        await self.stream.drain()  # back-pressure: when the writer process falls behind, callers wait here
        return await future

    async def _connected(self) -> None:
        """Attach the socket to the running event loop, once (the first caller does it, the others wait); start a
        new writer process if the last one ended (crashed, or was killed)."""
        if self.process.poll() is not None:
            log.error("the SQLite writer process ended (exit status %s); starting another", self._end())
            self._spawn()
        loop = asyncio.get_running_loop()
        if self.connecting is None or self.loop.is_closed():  # (a closed loop: e.g. one asyncio.run after another)
            self.loop = loop
            self.connecting = loop.create_task(self._connect())
        elif loop is not self.loop:
            raise RuntimeError("a SqliteStore is used from one running event loop at a time")
        await self.connecting

    def _end(self) -> int:
        """Close the socket of an ended writer process and reap it: its exit status."""
        if self.stream is not None and not self.loop.is_closed():
            self.stream.close()
        else:
            self.socket.close()
        try:
            return self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed its socket but hangs: it can write nothing more anyway
            self.process.kill()
            return self.process.wait()

    async def _connect(self) -> None:
        reader, self.stream = await asyncio.open_unix_connection(sock=self.socket)
        self.reading = self.loop.create_task(self._read_outcomes(reader, self.waiting))

    @staticmethod
    async def _read_outcomes(reader: asyncio.StreamReader, waiting: dict[int, asyncio.Future]) -> None:
        try:
            while True:
                (size,) = struct.unpack("!i", await reader.readexactly(4))
                if size == -1:  # multiprocessing's header for a message over 2 GiB
                    (size,) = struct.unpack("!Q", await reader.readexactly(8))
                for number, result, error in pickle.loads(await reader.readexactly(size)):
                    future = waiting.pop(number)
                    if not future.cancelled():
                        future.set_exception(error) if error is not None else future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError):  # the writer process ended
            error = RuntimeError("the SQLite writer process ended")
            for future in waiting.values():
                if not future.done():
                    future.set_exception(error)
            waiting.clear()

    async def stop(self) -> None:
        """Let the writer process finish what it was sent, then end it."""
        if self.process.poll() is not None:
            self._end()
            return
        await self._connected()
        self.stream.write(_frame([None]))
        await self.reading
        self.stream.close()
        await asyncio.get_running_loop().run_in_executor(None, self.process.wait, 30)


def _frame(message: list) -> bytes:
    """`message` pickled, with the length header multiprocessing's Connection.recv_bytes reads."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!i", len(payload)) + payload

