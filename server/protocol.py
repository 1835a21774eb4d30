"""uvicorn's HTTP protocol with deadlines for a request's headers and body, and a bound on the headers' size.

uvicorn times out idle keep-alive connections, but not a client that connects and never finishes its headers
or its body (slowloris): each such connection would be held forever, and headers may grow without end. Here
every request must have its headers within `header_timeout` seconds of its first byte (or of the connection),
at most `max_header_bytes` of them, and its body within `body_timeout` seconds of its headers; otherwise the
connection is answered 408 or 431 (headers) or closed (body, which the application sees as a client disconnect).
Past `max_connections` open connections a new one is answered 503 and closed. (uvicorn's own
`limit_concurrency` answers in plain text; every error Hearth gives is an OperationOutcome.)
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hearth.capability import fhir_json
from hearth.capability.outcome import FhirError

log = logging.getLogger("hearth.server")

LINGER_SECONDS = 2.0  # a refused connection's input is drained this long before it is closed


def _refusal(status: int, reason: str, code: str, diagnostics: str, extra: str = "") -> bytes:
    """A whole HTTP response closing the connection, with an OperationOutcome."""
    body = fhir_json.dumps(FhirError(status, code, diagnostics).outcome())
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/fhir+json; charset=utf-8\r\n{extra}"
            f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body


def bounded_protocol(header_timeout: float, body_timeout: float, max_header_bytes: int,
                     max_connections: int) -> type[HttpToolsProtocol]:
    """A protocol class for uvicorn's `http=` option with these bounds."""
    busy = _refusal(503, "Service Unavailable", "transient", f"Hearth holds its maximum of {max_connections} "
                    "connections (HEARTH_MAX_CONNECTIONS); try again", "retry-after: 1\r\n")
    timed_out = _refusal(408, "Request Timeout", "timeout", f"The request's headers did not arrive within {header_timeout:g} s "
                                                 "(HEARTH_HEADER_TIMEOUT)")
    too_large = _refusal(431, "Request Header Fields Too Large", "too-costly",
                         f"The request's headers exceed {max_header_bytes} bytes (HEARTH_MAX_HEADER_BYTES)")

    class BoundedHttpProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _in_headers = True
        _header_bytes = 0
        _refused = False

        def _refuse(self, response: bytes) -> None:
            """Send `response` and end the connection. What the client is still sending is read and dropped for a
            moment first: closing with unread data would reset the connection, and the client lose the answer."""
            self._disarm()
            self._refused = True
            self.transport.write(response)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

        def _arm(self, seconds: float, in_headers: bool) -> None:
            self._disarm()
            self._in_headers, self._header_bytes = in_headers, 0
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._in_headers:
                self._refuse(timed_out)
            else:
                log.info("closing a connection whose request body did not arrive within %g s", body_timeout)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            super().data_received(data)
            if self._in_headers and self._deadline is not None and not self.transport.is_closing():
                self._header_bytes += len(data)  # still no end of headers: all of it was headers
                if self._header_bytes > max_header_bytes:
                    self._refuse(too_large)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refuse(busy)
                return
            self._arm(header_timeout, True)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._deadline is None:  # the next request on a kept-alive connection
                self._arm(header_timeout, True)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout, False)

        def handle_websocket_upgrade(self) -> None:
            self._disarm()  # the connection is the websocket's from here on
            super().handle_websocket_upgrade()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return BoundedHttpProtocol
