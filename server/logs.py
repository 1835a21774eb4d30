"""Structured (JSON lines) logging, quiet by default; each line carries the request id of the request it is for."""

from __future__ import annotations

import contextvars
import logging
import sys

import orjson

# Set per request by server/metrics.py's middleware; read here so every log line names its request.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("hearth_request_id", default=None)
_FIELDS = ("method", "path", "status", "interaction", "duration_ms")  # `extra=` fields of the access log


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        event = {"time": self.formatTime(record), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        request_id = REQUEST_ID.get()
        if request_id is not None:
            event["request_id"] = request_id
        for name in _FIELDS:
            if name in record.__dict__:
                event[name] = record.__dict__[name]
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(event).decode()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
