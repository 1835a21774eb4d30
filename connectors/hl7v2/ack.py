"""HL7 v2 acknowledgements (design note b5): original mode (AA/AE/AR with ERR), enhanced mode (commit CA/CE/CR
and application ACKs as MSH-15/MSH-16 ask), batch ACKs, all in the sender's delimiters and charset."""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from typing import Literal, Sequence

from hearth.connectors.hl7v2.escape import DEFAULT, Delimiters, escape
from hearth.connectors.hl7v2.frame import (Batch, Header, Received, Refusal, charset_codec, normalise,
                                           read_delimiters, read_header)

AckMode = Literal["auto", "original", "enhanced"]

TABLE_0357 = {100: "Segment sequence error", 101: "Required field missing", 102: "Data type error",
              103: "Table value not found", 200: "Unsupported message type", 201: "Unsupported event code",
              202: "Unsupported processing id", 203: "Unsupported version id", 204: "Unknown key identifier",
              205: "Duplicate key identifier", 206: "Application record locked", 207: "Application internal error"}

_COMMIT = {"AA": "CA", "AE": "CE", "AR": "CR"}


class ControlIds:
    """Own message control ids: "H", UTC time to the second, a 7-digit counter (20 characters, unique per
    process unless it sends ten million messages in one second)."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self) -> str:
        return "H" + time.strftime("%y%m%d%H%M%S", time.gmtime()) + f"{next(self._counter) % 10_000_000:07d}"


CONTROL_IDS = ControlIds()


def timestamp(now: datetime | None = None) -> str:
    """A v2 DTM with a UTC offset: YYYYMMDDHHMMSS.FFFF+ZZZZ."""
    now = (now or datetime.now()).astimezone()
    return f"{now:%Y%m%d%H%M%S}.{now.microsecond // 100:04d}{now:%z}"


def original_ack(header: Header | None, refusal: Refusal | None = None) -> str:
    """Original mode: AA, or the refusal's AE/AR with an ERR segment."""
    return _ack(header, refusal.ack if refusal else "AA", refusal, enhanced=False)


def commit_ack(header: Header, refusal: Refusal | None = None) -> str | None:
    """Enhanced mode accept ACK (CA/CE/CR), or None when MSH-15 asks for none in this case."""
    if not _wanted(header.accept_ack, refusal is not None):
        return None
    return _ack(header, _COMMIT[refusal.ack if refusal else "AA"], refusal, enhanced=True)


def application_ack(header: Header, refusal: Refusal | None = None) -> str | None:
    """Enhanced mode application ACK (AA/AE/AR) after processing, or None when MSH-16 asks for none."""
    if not _wanted(header.application_ack, refusal is not None):
        return None
    return _ack(header, refusal.ack if refusal else "AA", refusal, enhanced=True)


def is_enhanced(header: Header, mode: AckMode) -> bool:
    return mode == "enhanced" or (mode == "auto" and bool(header.accept_ack or header.application_ack))


def _wanted(condition: str, failed: bool) -> bool:
    """MSH-15/MSH-16: AL (or empty, or unknown) always, NE never, ER on errors only, SU on success only."""
    return {"NE": False, "ER": failed, "SU": not failed}.get(condition, True)


def _ack(header: Header | None, code: str, refusal: Refusal | None, enhanced: bool) -> str:
    d = header.delimiters if header else DEFAULT
    source = header.field if header else (lambda n: "")
    event = escape(header.trigger_event, d) if header else ""
    charset = source(18) if header and header.charset_name and charset_codec(header.charset_name, "") else ""
    msh = ["MSH", d.encoding_characters, source(5), source(6), source(3), source(4), timestamp(), "",
           d.component.join(("ACK", event, "ACK")) if event else "ACK", CONTROL_IDS.next(),
           source(11) or "P", source(12) or "2.5.1", "", "", "NE" if enhanced else "", "NE" if enhanced else "",
           "", charset]
    version = _version(header.version if header else "")
    msa = ["MSA", code, source(10)]
    if refusal and version < (2, 4):
        msa.append(escape(refusal.text, d))
    segments = [_join(msh, d), _join(msa, d)]
    if refusal:
        segments.append(_err(refusal, d, version))
    return "".join(segment + "\r" for segment in segments)


def _err(refusal: Refusal, d: Delimiters, version: tuple[int, ...]) -> str:
    """ERR in the v2.5+ form (ERR-2 location, ERR-3 code, ERR-4 severity, ERR-8 text) or the older ERR-1 form."""
    meaning = TABLE_0357.get(refusal.error, "")
    if version < (2, 5):
        where = (list(refusal.location[:3]) + ["", "", ""])[:3]
        code = d.subcomponent.join((str(refusal.error), escape(meaning, d), "HL70357")) if d.subcomponent \
            else str(refusal.error)
        return _join(["ERR", d.component.join((*where, "", code))], d)
    code = d.component.join((str(refusal.error), escape(meaning, d), "HL70357"))
    return _join(["ERR", "", d.component.join(refusal.location), code, "E", "", "", "",
                  escape(refusal.text, d)], d)


def _join(fields: list[str], d: Delimiters) -> str:
    while fields and not fields[-1]:
        fields.pop()
    return d.field.join(fields)


def _version(version: str) -> tuple[int, ...]:
    """MSH-12 as numbers; an unreadable version counts as current (the v2.5+ ERR form)."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", version)[:3])
    return numbers if numbers and numbers[0] == 2 else (2, 9)


def batch_ack(batch: Batch, acks: Sequence[str], delimiters: Delimiters = DEFAULT) -> str:
    """A batch of ACKs: FHS (when the input had one), BHS, the ACKs, BTS, FTS; the input's FHS-11/BHS-11 are
    echoed in FHS-12/BHS-12 (reference control id), as HL7 says for an answering batch."""
    segments = []
    if batch.fhs is not None:
        segments.append(_envelope("FHS", batch.fhs, delimiters))
    segments.append(_envelope("BHS", batch.bhs or "", delimiters))
    body = "".join(acks)
    tail = [_join(["BTS", str(len(acks))], delimiters)]
    if batch.fhs is not None:
        tail.append(_join(["FTS", "1"], delimiters))
    return "".join(s + "\r" for s in segments) + body + "".join(s + "\r" for s in tail)


def _envelope(kind: str, source: str, d: Delimiters) -> str:
    """FHS or BHS answering the input's: sender and receiver swapped, own control id, the input's as reference."""
    fields = source.split((read_delimiters(source) or d).field) if source else []
    given = ["", d.field, *fields[1:]]

    def at(n: int) -> str:
        return given[n] if n < len(given) else ""

    return _join([kind, d.encoding_characters, at(5), at(6), at(3), at(4), timestamp(), "", "", "",
                  CONTROL_IDS.next(), at(11)], d)


def encode(text: str, charset: str) -> bytes:
    """An ACK in the message's charset; what it cannot hold becomes "?"."""
    return text.encode(charset, errors="replace")


def reply(received: Received, mode: AckMode = "auto") -> bytes | None:
    """The answer to a checked frame once its accepted messages are committed (AA/CA for them), or None when
    enhanced mode asks for no commit ACK. A batch is answered message by message in original mode."""
    batch = received.batch
    if batch is None or not batch.is_batch:
        header, refusal = _parts(received.messages[0])
        if header and is_enhanced(header, mode):
            text = commit_ack(header, refusal)
            return None if text is None else encode(text, header.charset)
        return encode(original_ack(header, refusal), header.charset if header else "ascii")
    acks = [original_ack(*_parts(outcome)) for outcome in received.messages]
    first = batch.fhs or batch.bhs or batch.messages[0]
    return encode(batch_ack(batch, acks, read_delimiters(first) or DEFAULT), received.charset)


def _parts(outcome: Header | Refusal) -> tuple[Header | None, Refusal | None]:
    return (outcome.header, outcome) if isinstance(outcome, Refusal) else (outcome, None)


def too_large(head: bytes, limit: int, default_charset: str = "UNICODE UTF-8") -> bytes:
    """AR 207 for a frame longer than `limit` bytes, echoing what its first bytes tell of the header."""
    found = read_header(normalise(head), default_charset)
    header = found.header if isinstance(found, Refusal) else found
    refusal = Refusal("AR", 207, (), f"the message is longer than {limit} bytes", header)
    return encode(original_ack(header, refusal), header.charset if header else "ascii")
