"""How storing one message ended. What it makes is written by connectors/writes.py: one transaction through the
dispatcher (sequential updates where the store has no transactions), those matched with stored ones only if
still at the version matched (If-Match); a re-sent message makes no new versions."""

from __future__ import annotations

from dataclasses import dataclass, field

from hearth.connectors.hl7v2.frame import Refusal


@dataclass
class Converted:
    """How one message ended: `state` done | failed (a dead letter) | rejected (AE, nothing written)."""

    state: str
    refusal: Refusal | None = None  # the AE an original-mode ACK or an application ACK gives
    reason: str | None = None  # a dead letter's reason
    error: str | None = None
    written: list[str] = field(default_factory=list)  # Type/id/_history/n of each resource written
