"""The checks a received frame goes through before anything is stored (design note b4, steps 1–7 and 9): byte
normalisation, MSH-1/MSH-2, the MSH-18 charset, batch splitting, routing, the sender allow-list and the segments
and fields conversion cannot do without. Pure functions: no storage, no I/O."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field, replace
from typing import Literal, Mapping

from hearth.connectors.hl7v2.escape import DEFAULT, Delimiters, unescape

AckCode = Literal["AA", "AE", "AR"]

BOM = b"\xef\xbb\xbf"
HEADERS = ("MSH", "FHS", "BHS")

# HL7 table 0211 names (and common spellings) → Python codecs. Only ASCII-compatible charsets: normalisation
# and MSH-18 itself are read on bytes before decoding.
_CHARSETS: dict[str, str] = {
    "ASCII": "ascii", "ISO IR6": "ascii", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "UTF8": "utf-8",
    "ISO-8859-1": "iso8859-1", "ISO IR100": "iso8859-1",
    **{f"8859/{n}": codecs.lookup(f"iso8859-{n}").name for n in (*range(1, 12), 13, 14, 15, 16)},
}

# Segments conversion needs, by (MSH-9.1, MSH-9.2); "*" = any event of the type. PID is required everywhere.
REQUIRED_SEGMENTS: Mapping[tuple[str, str], tuple[str, ...]] = {
    **{("ADT", e): ("PID", "PV1") for e in ("A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A09", "A10",
                                            "A11", "A13", "A14", "A28", "A31")},
    **{("ADT", e): ("PID", "MRG") for e in ("A39", "A40", "A41", "A42")},
    ("ORU", "*"): ("PID", "OBR"),
    ("VXU", "*"): ("PID", "RXA"),
    ("SIU", "*"): ("SCH", "PID"),
}
PAIRED = frozenset({"MRG"})  # one per PID (A39–A42 carry PID/MRG pairs)


@dataclass(frozen=True)
class Header:
    """One message's MSH, fields as received (still escaped, so an ACK with the same delimiters echoes them)."""

    delimiters: Delimiters
    charset: str  # the Python codec the message was decoded with (and its ACK is encoded with)
    msh: tuple[str, ...]  # msh[n] is MSH-n; msh[0] is "MSH" and msh[1] the field separator
    text: str  # the decoded message, segments ended by "\r"

    def field(self, n: int) -> str:
        return self.msh[n] if n < len(self.msh) else ""

    def component(self, n: int, c: int = 1) -> str:
        """MSH-n.c of the first repetition, unescaped."""
        return component(self.field(n), c, self.delimiters, self.charset)

    @property
    def sending_facility(self) -> str:
        return self.component(4)

    @property
    def message_type(self) -> str:
        return self.component(9, 1)

    @property
    def trigger_event(self) -> str:
        return self.component(9, 2)

    @property
    def control_id(self) -> str:
        return self.component(10)

    @property
    def version(self) -> str:
        return self.component(12)

    @property
    def accept_ack(self) -> str:
        """MSH-15: AL, NE, ER, SU or ''."""
        return self.component(15).upper()

    @property
    def application_ack(self) -> str:
        """MSH-16: AL, NE, ER, SU or ''."""
        return self.component(16).upper()

    @property
    def charset_name(self) -> str:
        """MSH-18 (first repetition) as written."""
        return self.component(18)


@dataclass(frozen=True)
class Refusal:
    """Why a frame or message is answered AE/AR: ERR-3 (HL7 table 0357), ERR-2 location, a text for people."""

    ack: AckCode
    error: int
    location: tuple[str, ...]  # ("MSH", "1", "10"), ("PV1",) or () when there is none
    text: str
    header: Header | None = None  # what could be read of the message, for MSA-2 and the ACK's delimiters


@dataclass(frozen=True)
class Batch:
    """A frame split at its MSH segments; the envelope segments are kept for the batch ACK."""

    messages: tuple[str, ...]
    fhs: str | None = None
    bhs: str | None = None
    stray: tuple[str, ...] = ()  # segments before the first MSH that are no envelope: a sequence error

    @property
    def is_batch(self) -> bool:
        return self.fhs is not None or self.bhs is not None or len(self.messages) != 1


@dataclass(frozen=True)
class Policy:
    """The routing that needs no storage: what the connector converts and whom it accepts."""

    supported: frozenset[tuple[str, str]]  # (MSH-9.1, MSH-9.2)
    facilities: frozenset[str] = frozenset()  # MSH-4.1 allow-list; empty: any sender
    default_charset: str = "UNICODE UTF-8"  # when MSH-18 is empty (HL7 table 0211 name)
    required: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=lambda: REQUIRED_SEGMENTS)


@dataclass(frozen=True)
class Received:
    """A frame after the checks: its batch envelope (None when the frame itself was refused) and each message's
    Header (accepted so far) or Refusal, in order."""

    batch: Batch | None
    messages: tuple[Header | Refusal, ...]
    charset: str = "ascii"  # the Python codec of the frame (and of its answer)


def normalise(raw: bytes) -> bytes:
    """Step 1: no BOM, "\\r" as the only segment end, no empty segments, no trailing spaces in segments."""
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    lines = raw.rstrip(b"\r\n\x00").replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r")
    segments = [line.rstrip(b" ") for line in lines]
    return b"".join(segment + b"\r" for segment in segments if segment)


def read_delimiters(segment: str) -> Delimiters | None:
    """Step 2: MSH-1 and MSH-2 of an MSH, FHS or BHS segment, or None when they cannot be trusted."""
    if len(segment) < 4 or segment[:3] not in HEADERS:
        return None
    sep = segment[3]
    if sep.isalnum() or sep.isspace() or not sep.isprintable():
        return None
    end = segment.find(sep, 4)
    chars = segment[4:] if end < 0 else segment[4:end]
    if not 3 <= len(chars) <= 5 or len(set(chars)) != len(chars) or sep in chars:
        return None
    if any(c.isalnum() or c.isspace() or not c.isprintable() for c in chars):
        return None
    # three characters: no subcomponent separator (then "&" is data)
    return Delimiters(sep, chars[0], chars[1], chars[2], chars[3:4], chars[4:5])


def charset_codec(name: str, default: str) -> str | None:
    """Step 3: the Python codec for an MSH-18 value (the connector's default when empty), None if unsupported."""
    key = " ".join((name.strip() or default).upper().split())
    return _CHARSETS.get(key)


def decode(payload: bytes, default_charset: str = "UNICODE UTF-8") -> tuple[str, str] | Refusal:
    """Steps 2–3 for a normalised frame: trusted delimiters, then the text decoded by the first MSH's MSH-18;
    returns (text, Python codec)."""
    rough = payload.decode("latin-1").split("\r")  # lossless; every supported charset is ASCII there
    if read_delimiters(rough[0]) is None:
        return Refusal("AR", 102, (), "MSH-1/MSH-2 (field separator and encoding characters) cannot be read")
    at = next((i for i, s in enumerate(rough) if s.startswith("MSH")), None)
    if at is None:
        return Refusal("AR", 100, ("MSH",), "the frame holds no MSH segment")
    guess = parse_header("\r".join(rough[at:]), "ascii")
    header = guess if isinstance(guess, Header) else None
    name = header.charset_name if header else ""
    codec = charset_codec(name, default_charset)
    if codec is None:
        return Refusal("AR", 207, ("MSH", "1", "18"), f"character set {name or default_charset} is not supported",
                       header)
    try:
        return payload.decode(codec), codec
    except UnicodeDecodeError as error:
        return Refusal("AE", 102, ("MSH", "1", "18"),
                       f"the bytes are not {name or default_charset} (byte {error.start + 1})",
                       header and replace(header, charset=codec))


def read_header(payload: bytes, default_charset: str = "UNICODE UTF-8") -> Header | Refusal:
    """Steps 2–3 for a normalised frame: the header of its first message."""
    decoded = decode(payload, default_charset)
    if isinstance(decoded, Refusal):
        return decoded
    text, codec = decoded
    return parse_header(split_batch(text).messages[0], codec)


def parse_header(text: str, charset: str) -> Header | Refusal:
    """The header of one decoded message (its text starts with MSH)."""
    segment = text.split("\r", 1)[0]
    delimiters = read_delimiters(segment) if segment.startswith("MSH") else None
    if delimiters is None:
        return Refusal("AR", 102, (), "MSH-1/MSH-2 (field separator and encoding characters) cannot be read")
    fields = segment.split(delimiters.field)
    return Header(delimiters, charset, ("MSH", delimiters.field, *fields[1:]), text)


def split_batch(text: str) -> Batch:
    """Step 4: the messages of a frame (one, several MSH, or an FHS/BHS batch); BTS and FTS are dropped."""
    messages: list[list[str]] = []
    fhs = bhs = None
    stray: list[str] = []
    for segment in text.split("\r"):
        kind = segment[:3]
        if not segment or kind in ("BTS", "FTS"):
            continue
        if kind == "MSH":
            messages.append([segment])
        elif messages:
            messages[-1].append(segment)
        elif kind == "FHS" and fhs is None:
            fhs = segment
        elif kind == "BHS" and bhs is None:
            bhs = segment
        else:
            stray.append(segment)
    return Batch(tuple("".join(s + "\r" for s in m) for m in messages), fhs, bhs, tuple(stray))


def check(header: Header, policy: Policy) -> Refusal | None:
    """Steps 5–7 and 9: routing, allow-list, MSH-10, required segments and fields; None when it may be stored."""
    kind, event = header.message_type, header.trigger_event
    if kind not in {k for k, _ in policy.supported}:
        return _refuse(header, "AR", 200, ("MSH", "1", "9"), f"message type {kind or '(empty)'} is not supported")
    if (kind, event) not in policy.supported:
        return _refuse(header, "AR", 201, ("MSH", "1", "9", "2"),
                       f"event {kind}^{event or '(empty)'} is not supported")
    if not re.fullmatch(r"2\.\d+(\.\d+)*", header.version):
        return _refuse(header, "AR", 203, ("MSH", "1", "12"), f"version {header.version or '(empty)'} is not 2.x")
    if policy.facilities and header.sending_facility not in policy.facilities:
        return _refuse(header, "AR", 207, ("MSH", "1", "4"),
                       f"sending facility {header.sending_facility or '(empty)'} is not allowed here")
    if not header.control_id:
        return _refuse(header, "AE", 101, ("MSH", "1", "10"), "MSH-10 (message control id) is empty")
    return _structure(header, policy)


def _refuse(header: Header, ack: AckCode, error: int, location: tuple[str, ...], text: str) -> Refusal:
    return Refusal(ack, error, location, text, header)


def _structure(header: Header, policy: Policy) -> Refusal | None:
    """Step 9: the required segments are there, PID-3 and MRG-1 are valued (a light scan, no full parse)."""
    kind, event = header.message_type, header.trigger_event
    required = policy.required.get((kind, event)) or policy.required.get((kind, "*")) or ("PID",)
    segments = [s.split(header.delimiters.field) for s in header.text.split("\r") if s]
    names = [s[0] for s in segments]
    for name in dict.fromkeys(("PID", *required)):
        if name not in names:
            return _refuse(header, "AE", 100, (name,), f"required segment {name} is missing")
    if PAIRED & set(required) and names.count("PID") > names.count("MRG"):
        return _refuse(header, "AE", 100, ("MRG",), "each PID needs its MRG segment")
    counts: dict[str, int] = {}
    for fields in segments:
        counts[fields[0]] = counts.get(fields[0], 0) + 1
        need = {"PID": 3, "MRG": 1}.get(fields[0]) if fields[0] in ("PID", *required) else None
        if need and not component(fields[need] if need < len(fields) else "", 1, header.delimiters, header.charset):
            where = (fields[0], str(counts[fields[0]]), str(need))
            return _refuse(header, "AE", 101, where, f"{fields[0]}-{need} is empty")
    return None


def component(value: str, c: int, delimiters: Delimiters = DEFAULT, charset: str = "utf-8") -> str:
    """Component c of a field's first repetition, unescaped."""
    first = value.split(delimiters.repetition, 1)[0] if delimiters.repetition else value
    parts = first.split(delimiters.component)
    return unescape(parts[c - 1], delimiters, charset) if c <= len(parts) else ""


def receive(raw: bytes, policy: Policy) -> Received:
    """Steps 1–7 and 9 for one frame's payload: what may be stored (Headers) and what is refused."""
    decoded = decode(normalise(raw), policy.default_charset)
    if isinstance(decoded, Refusal):
        return Received(None, (decoded,))
    text, codec = decoded
    batch = split_batch(text)
    if batch.stray:
        name = batch.stray[0][:3]
        return Received(None, (Refusal("AR", 100, (name,), f"segment {name} comes before the first MSH"),), codec)
    return Received(batch, tuple(_message(message, codec, policy) for message in batch.messages), codec)


def _message(text: str, charset: str, policy: Policy) -> Header | Refusal:
    header = parse_header(text, charset)
    if isinstance(header, Refusal):
        return header
    return check(header, policy) or header
