"""The server's side of the SQLite writer process (storage/sqlite/writer_process.py): starts it (or, in a group of
`hearth serve --workers N`, connects to the group's shared one), sends it jobs, settles each job's future with its
outcome."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from hearth.storage.base import StoreClosing

log = logging.getLogger("hearth.storage.sqlite")


class WriterUnavailable(StoreClosing):
    """The writer process ended (killed, or restarting): the writes sent to it fail at once (a 503), the next ones
    reach its successor."""


class Writer:
    """The server's side of the writer process, on the event loop: frames jobs onto a socket, reads outcomes.

    No thread in between: a hand-over between threads waits for the interpreter lock, which a busy event loop
    holds for up to the switch interval (5 ms), and those waits left both processes idle a third of the time.
    """

    def __init__(self, path: str, synchronous: str, address: str = "") -> None:
        """`address`: the Unix socket of a shared writer process to connect to; empty: start one of our own."""
        self.path, self.synchronous, self.address = path, synchronous, address
        self.numbers = itertools.count()
        self.process: subprocess.Popen | None = None
        self._spawn()

    def _spawn(self) -> None:
        if not self.address:
            self.process, self.socket = launch(self.path, self.synchronous)
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
        if self.reading.done():  # it ended since we connected: nobody would settle the future
            raise WriterUnavailable("The database writer process ended; retry the write")
        future = self.waiting[number] = self.loop.create_future()
        try:
            self.stream.write(frame)
            await self.stream.drain()  # back-pressure: when the writer process falls behind, callers wait here
        except ConnectionError:  # it ended meanwhile: the reading task settles the future
            pass
        return await future

    async def _connected(self) -> None:
        """Attach the socket to the running event loop, once (the first caller does it, the others wait); start a
        new writer process if the last one ended (crashed, or was killed), or connect to the shared one again."""
        if self.process is not None and self.process.poll() is not None:
            log.error("the SQLite writer process ended (exit status %s); starting another", self._end())
            self._spawn()
        elif self.address and self.reading is not None and self.reading.done():
            log.error("the shared SQLite writer process ended; connecting to its successor")
            self.stream.close()
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
        try:
            reader, self.stream = await (asyncio.open_unix_connection(path=self.address) if self.address else
                                         asyncio.open_unix_connection(sock=self.socket))
        except OSError as error:  # the shared writer is not listening (its supervisor is gone): try again next time
            self.connecting = None
            raise WriterUnavailable(f"The database writer is not running ({error.strerror}); retry later") from None
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
            error = WriterUnavailable("The database writer process ended; the write may not have been committed: "
                                      "read the resource, or retry")
            for future in waiting.values():
                if not future.done():
                    future.set_exception(error)
            waiting.clear()

    async def stop(self) -> None:
        """Let the writer process finish what it was sent, then end it (a shared one: end this connection)."""
        if self.process is not None and self.process.poll() is not None:
            self._end()
            return
        try:
            await self._connected()
        except WriterUnavailable:  # a shared writer that is gone: nothing left to finish
            return
        self.stream.write(_frame([None]))
        await self.reading
        self.stream.close()
        if self.process is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.process.wait, 30)


class SharedWriter:
    """The writer process of a `hearth serve --workers N` group: it listens on a Unix socket in a private folder
    (0700; the socket 0600) that the group's server processes connect to. Its supervisor (server/workers.py)
    starts another on the same socket if it ends: connections made meanwhile wait in the socket's backlog."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.folder = tempfile.mkdtemp(prefix="hearth-writer-")
        self.address = os.path.join(self.folder, "writer.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        os.chmod(self.address, 0o600)
        self.listener.listen(256)
        self.process, self.control = launch(path, synchronous, self.listener)

    def ended(self) -> bool:
        return self.process.poll() is not None

    def restart(self) -> None:
        """Start another writer process on the same socket (the last one ended)."""
        self.control.close()
        self.process, self.control = launch(self.path, self.synchronous, self.listener)

    def stop(self) -> None:
        """End the writer process (after the server processes: it answers what they sent first) and the socket."""
        if not self.ended():
            try:
                self.control.sendall(_frame([None]))
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self.control.close()
        self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def launch(path: str, synchronous: str,
           listener: socket.socket | None = None) -> tuple[subprocess.Popen, socket.socket]:
    """A writer process on the database at `path` (also serving the connections `listener` accepts) and our end
    of its control connection."""
    ours, child = socket.socketpair()
    listening = [] if listener is None else [listener.fileno()]
    # a fresh interpreter (`python -m hearth.storage.sqlite.writer_process`), not a fork: forking a process with threads
    # can leave the child holding locks no thread will release, and multiprocessing's spawn re-runs __main__
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with child:
        process = subprocess.Popen([sys.executable, "-m", "hearth.storage.sqlite.writer_process", str(child.fileno()),
                                    path, synchronous, *map(str, listening)], pass_fds=[child.fileno(), *listening],
                                   env=env, stdin=subprocess.DEVNULL)
    return process, ours


def _frame(message: list) -> bytes:
    """`message` pickled, with the length header multiprocessing's Connection.recv_bytes reads."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("!i", len(payload)) + payload

