"""HL7 v2 delimiters and escape sequences (v2.5.1 §2.7): decode after splitting a value into its parts, encode
before joining. Charset-aware `\\X..\\` (the `hl7` package decodes it as Latin-1) and `\\H\\`/`\\N\\` removed (the
package turns them into `_`)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger("hearth.connectors.hl7v2")


@dataclass(frozen=True)
class Delimiters:
    """The separators of a message, read from MSH-1 and MSH-2 (`truncation` is MSH-2's 5th character, v2.7+)."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT = Delimiters()

_FORMATTING = re.compile(r"\.(br|sp|fi|nf|in|ti|sk|ce)([+-]?\d*)")
_HEX = re.compile(r"X((?:[0-9A-Fa-f]{2})+)")


def unescape(text: str, delimiters: Delimiters = DEFAULT, charset: str = "utf-8") -> str:
    """One decoded leaf value; `charset` is the Python codec of the message, used for `\\X..\\` bytes."""
    esc = delimiters.escape
    if not esc or esc not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        start = text.find(esc, i)
        end = text.find(esc, start + 1) if start >= 0 else -1
        if end < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:start])
        body = text[start + 1:end]
        decoded = _sequence(body, delimiters, charset)
        out.append(esc + body + esc if decoded is None else decoded)
        i = end + 1


def _sequence(body: str, delimiters: Delimiters, charset: str) -> str | None:
    """The text an escape sequence stands for, or None for one we do not know (kept as written)."""
    simple = {"F": delimiters.field, "S": delimiters.component, "T": delimiters.subcomponent,
              "R": delimiters.repetition, "E": delimiters.escape, "P": delimiters.truncation}
    if body in ("H", "N"):  # highlighting on/off: no meaning in plain text
        return ""
    if simple.get(body):
        return simple[body]
    if hexa := _HEX.fullmatch(body):
        try:
            return bytes.fromhex(hexa.group(1)).decode(charset)
        except UnicodeDecodeError:
            return None
    if fmt := _FORMATTING.fullmatch(body):
        return _formatting(fmt.group(1), fmt.group(2))
    if body[:1] in ("C", "M") and len(body) > 1:
        log.warning("HL7 v2 character set escape \\%s\\ is not supported: removed", body)
        return ""
    return None


def _formatting(command: str, argument: str) -> str:
    """FT formatting commands as plain text: line breaks stay line breaks, layout hints go."""
    count = int(argument) if argument.lstrip("+-").isdigit() else 1
    if command in ("br", "ce"):
        return "\n"
    if command == "sp":
        return "\n" * max(count, 1)
    if command == "sk":
        return " " * max(count, 1)
    return ""


def escape(text: str, delimiters: Delimiters = DEFAULT) -> str:
    """Text made safe for one leaf value: delimiters and control characters become escape sequences."""
    esc = delimiters.escape
    names = {delimiters.escape: "E", delimiters.field: "F", delimiters.component: "S",
             delimiters.subcomponent: "T", delimiters.repetition: "R", delimiters.truncation: "P"}
    table = {char: f"{esc}{name}{esc}" for char, name in names.items() if char}
    return "".join(table.get(c) or (f"{esc}X{ord(c):02X}{esc}" if ord(c) < 0x20 or c == "\x7f" else c)
                   for c in text)
