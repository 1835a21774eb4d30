"""MLLP over asyncio (design note b4, framing): frames `0x0B … 0x1C 0x0D`, bytes before a start block dropped, a
new start block inside a frame restarts it (resync), a size limit and a read timeout for started frames. Each
connection answers its frames in order (one queue and one task per connection) and stops reading while too many
wait (back-pressure). What a frame means is the injected handler's business."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence, cast

log = logging.getLogger("hearth.connectors.hl7v2")

START = b"\x0b"
END = b"\x1c\x0d"
HEAD = 65536  # what a too-large frame's handler sees of it: enough for the header

Reply = Callable[[bytes], bool]  # one more frame on the same connection, later (False: the connection is gone)
Handler = Callable[[bytes, Reply], Awaitable[bytes | None]]


def frame(payload: bytes) -> bytes:
    return START + payload + END


@dataclass(frozen=True)
class Limits:
    max_frame: int = 1 << 20  # payload bytes; beyond, `too_large` answers and the rest is skipped
    read_timeout: float = 30.0  # silence inside a started frame before its bytes are dropped
    max_pending: int = 8  # frames waiting for their answer before the connection stops reading


class Listener:
    """An MLLP server: `handle(payload, reply)` answers each complete frame (None: no answer; `reply` sends a
    later frame on the same connection, such as an application ACK); `too_large(head, reply)` answers a frame
    over the limit from its first bytes."""

    def __init__(self, handle: Handler, too_large: Handler | None = None, limits: Limits = Limits()) -> None:
        self.handle = handle
        self.too_large = too_large
        self.limits = limits
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port)

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        assert self._server is not None, "the listener is not started"
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting and reading; frames already read are answered within `grace` seconds, then cut."""
        if self._server is None:
            return
        self._server.close()
        connections = list(self._connections)
        for connection in connections:
            connection.finish()
        workers = [c.worker for c in connections]
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace)
            for task in late:
                task.cancel()
            for connection in connections:
                connection.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class _Connection(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.limits = listener.limits
        self.buffer = bytearray()
        self.in_frame = False
        self.scanned = 0  # bytes of the started frame already searched for its end
        self.skipping = False  # after a too-large frame: its rest is expected, not reported as junk
        self.junk_reported = False
        self.paused = False
        self.lost = False
        self.timer: asyncio.TimerHandle | None = None
        self.queue: asyncio.Queue[tuple[Handler, bytes] | None] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are no asyncio.Transport subclass
        self.peer = transport.get_extra_info("peername")
        self.worker = asyncio.get_running_loop().create_task(self._work())
        self.listener._connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._next():
            pass
        self._arm_timer()

    def eof_received(self) -> bool:
        self.finish()
        return True  # half-open: the answers to frames already read still go out

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.writable.set()
        self.finish()
        self.listener._connections.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def reply(self, payload: bytes) -> bool:
        """Send a frame outside the order of answers (nothing waits for the transport's buffer)."""
        if self.lost or self.transport.is_closing():
            return False
        self.transport.write(frame(payload))
        return True

    def finish(self) -> None:
        """No more frames: drop a partial one, answer what was read, then close."""
        self._drop("the connection ends")
        if not self.lost:
            self.transport.pause_reading()
        self.queue.put_nowait(None)

    def _next(self) -> bool:
        """Consume the buffer up to one event (frame start, end, resync, overflow); False when more bytes are
        needed."""
        buffer = self.buffer
        if not self.in_frame:
            start = buffer.find(START)
            if start != 0 and buffer and not self.skipping and not self.junk_reported:
                self.junk_reported = True
                log.warning("MLLP %s: bytes outside a frame dropped", self.peer)
            if start < 0:
                buffer.clear()
                return False
            del buffer[:start + 1]
            self.in_frame, self.scanned, self.skipping = True, 0, False
        end = buffer.find(END, max(self.scanned - 1, 0))
        restart = buffer.find(START, self.scanned, end if end >= 0 else len(buffer))
        if restart >= 0:
            log.warning("MLLP %s: a new start block inside a frame; the partial frame is dropped", self.peer)
            del buffer[:restart]
            self.in_frame = False
            return True
        if end > self.limits.max_frame or (end < 0 and len(buffer) > self.limits.max_frame):
            self._overflow(end)
            return True
        if end < 0:
            self.scanned = len(buffer)
            return False
        self._enqueue(self.listener.handle, bytes(buffer[:end]))
        del buffer[:end + len(END)]
        self.in_frame = False
        return True

    def _overflow(self, end: int) -> None:
        """Refuse a frame over the limit; its bytes not read yet are skipped up to the next start block."""
        log.warning("MLLP %s: a frame longer than %d bytes is refused", self.peer, self.limits.max_frame)
        if self.listener.too_large is not None:
            self._enqueue(self.listener.too_large, bytes(self.buffer[:HEAD]))
        del self.buffer[:end + len(END) if end >= 0 else len(self.buffer)]
        self.in_frame, self.skipping = False, end < 0

    def _drop(self, why: str) -> None:
        if self.in_frame:
            log.warning("MLLP %s: %s inside a frame; %d bytes dropped", self.peer, why, len(self.buffer))
        self.buffer.clear()
        self.in_frame = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.in_frame:
            self.timer = asyncio.get_running_loop().call_later(
                self.limits.read_timeout, self._drop, f"{self.limits.read_timeout:g} s of silence")

    def _enqueue(self, handler: Handler, data: bytes) -> None:
        self.queue.put_nowait((handler, data))
        if not self.paused and self.queue.qsize() >= self.limits.max_pending:
            self.paused = True
            self.transport.pause_reading()

    async def _work(self) -> None:
        """Answer frames one at a time, in arrival order; close once the connection is finished."""
        while (job := await self.queue.get()) is not None:
            if self.paused and self.queue.qsize() < self.limits.max_pending and not self.lost:
                self.paused = False
                self.transport.resume_reading()
            handler, data = job
            try:
                answer = await handler(data, self.reply)
            except Exception:
                log.exception("MLLP %s: the frame's handler failed; no answer", self.peer)
                continue
            if answer is not None and not self.lost:
                await self.writable.wait()
                if not self.lost:
                    self.transport.write(frame(answer))
        if not self.lost:
            self.transport.close()


async def read_frames(reader: asyncio.StreamReader, count: int, timeout: float) -> list[bytes]:
    """Up to `count` frame payloads, fewer if `timeout` seconds pass or the peer closes first."""
    frames: list[bytes] = []
    buffer = bytearray()
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(deadline - time.monotonic(), 0))
        except asyncio.TimeoutError:
            break
        if not chunk:
            break
        buffer += chunk
        while (start := buffer.find(START)) >= 0 and (end := buffer.find(END, start)) >= 0:
            frames.append(bytes(buffer[start + 1:end]))
            del buffer[:end + len(END)]
    return frames


async def send_raw(host: str, port: int, wire: bytes, expect: int, timeout: float = 5.0) -> list[bytes]:
    """Write bytes as they are (framing included) in one write, and read up to `expect` answers."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(wire)
        await writer.drain()
        return await read_frames(reader, expect, timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def send(host: str, port: int, payloads: Sequence[bytes], timeout: float = 5.0) -> list[bytes]:
    """A small client: each payload in its own frame, all in one write; the answers, in order."""
    return await send_raw(host, port, b"".join(frame(p) for p in payloads), len(payloads), timeout)
