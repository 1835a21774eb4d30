"""What a received frame becomes (design note b3–b5), the same for an MLLP frame and an HTTP body: the checks of
frame.py, then every accepted message committed to the inbox in one job, and only then the answer.

- AA (CA in enhanced mode) means "committed": a crash after it loses nothing, a crash before it means the sender
  sends again. Conversion runs later, from the inbox.
- A duplicate (same connector, MSH-3, MSH-4, MSH-10) stores nothing and gets the answer the first one got.
- A message whose answer depends on its conversion waits for it, bounded by `read_timeout` (then AA: it is
  committed): an A40 merge (AE 204 when MRG-1 names no patient), every message with `ack_after = "conversion"`,
  and results or updates about an unknown patient with `unknown_patient = "reject"`. In enhanced mode the
  application ACK follows on the same connection once the message is converted, as MSH-16 asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any, Callable

from hearth.connectors.hl7v2 import ack
from hearth.connectors.hl7v2.config import Hl7Config
from hearth.connectors.hl7v2.escape import DEFAULT
from hearth.connectors.hl7v2.frame import Header, Policy, Received, Refusal, receive, read_delimiters
from hearth.connectors.hl7v2.maps import maps
from hearth.storage.base import Hl7Inbox, NewInboxRow

log = logging.getLogger("hearth.connectors.hl7v2")

Reply = Callable[[bytes], bool]  # writes one more frame on the connection a message came on; False once it is gone
REGISTERING = frozenset({"A01", "A04", "A05", "A28"})  # events that may make a patient under unknown_patient=reject


def message_key(header: Header) -> str:
    """The duplicate key: sha256 of MSH-3, MSH-4 and MSH-10 as sent (first components, unescaped)."""
    parts = (header.component(3), header.component(4), header.control_id)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def header_document(header: Header) -> dict[str, Any]:
    """What the inbox keeps of a message's header (for people, status and the converter's routing)."""
    return {"application": header.component(3), "facility": header.sending_facility,
            "control_id": header.control_id, "type": header.message_type, "event": header.trigger_event,
            "version": header.version, "accept_ack": header.accept_ack, "application_ack": header.application_ack}


Ending = tuple[Refusal | None, bytes | None]  # how a conversion ended, and the answer saved with it (if any)


class Settled:
    """Waiters for messages being converted, by inbox key: the converter says how each ended."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[Ending]]] = {}

    def wait(self, key: str) -> asyncio.Future[Ending]:
        future: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        return future

    def done(self, key: str, refusal: Refusal | None, answer: bytes | None) -> None:
        for future in self._waiting.pop(key, []):
            if not future.done():
                future.set_result((refusal, answer))


class Receiver:
    """One connector's receive path."""

    def __init__(self, config: Hl7Config, inbox: Hl7Inbox, settled: Settled,
                 wake: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.inbox = inbox
        self.settled = settled
        self.wake = wake
        supported = frozenset(tuple(event.split("^")) for event in maps().events())
        self.policy = Policy(supported, frozenset(config.sending_facilities), config.charset)
        self.counts: dict[str, int] = {"received": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "errors": 0}
        self._replies: set[asyncio.Task] = set()

    async def answer(self, payload: bytes, reply: Reply | None = None) -> bytes | None:
        """The answer to one frame's payload (None: enhanced mode asks for no commit ACK)."""
        received = receive(payload, self.policy)
        outcomes = list(received.messages)
        self.counts["received"] += len(outcomes)
        accepted = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, Header)]
        texts: dict[int, str | None] = {}
        if accepted:
            try:
                texts = await self._commit(accepted, reply)
            except Exception:  # the store failed: nothing is acknowledged, the sender sends again
                log.exception("hl7v2 %s: the inbox could not store a frame", self.config.name)
                self.counts["errors"] += len(accepted)
                failure = "the message could not be stored; send it again"
                outcomes = [Refusal("AR", 207, (), failure, o) if isinstance(o, Header) else o for o in outcomes]
        self.counts["rejected"] += sum(isinstance(o, Refusal) for o in outcomes)
        return self._reply(received, outcomes, texts)

    async def _commit(self, accepted: list[tuple[int, Header]], reply: Reply | None) -> dict[int, str | None]:
        """Commit the accepted messages in one inbox job; their answers (text), waiting where they must."""
        rows, immediate = [], {}
        for index, header in accepted:
            decided = None if self._waits(header) else self._first_answer(header)
            immediate[index] = decided
            raw = header.text.encode(header.charset)
            rows.append(NewInboxRow(message_key(header), hashlib.sha256(raw).hexdigest(), raw, header.charset,
                                    header_document(header), ack=decided.encode(header.charset) if decided else None))
        stored = await self.inbox.receive(self.config.name, rows)
        self.wake()
        texts: dict[int, str | None] = {}
        waits: dict[int, asyncio.Future[Ending]] = {}
        for (index, header), row, earlier in zip(accepted, rows, stored):
            if earlier is not None:
                self.counts["duplicates"] += 1
                if earlier.ack is not None:
                    texts[index] = earlier.ack.decode(earlier.charset)
                    continue
                if earlier.state != "pending":  # settled without a saved answer (cannot happen, but answer it)
                    texts[index] = self._first_answer(header)
                    continue
            else:
                self.counts["accepted"] += 1
                if ack.is_enhanced(header, self.config.ack) and reply is not None:
                    self._follow_up(header, row.key, reply)
            if immediate[index] is not None and earlier is None:
                texts[index] = immediate[index]
            else:
                waits[index] = self.settled.wait(row.key)
        headers = dict(accepted)
        for index, future in waits.items():
            header = headers[index]
            try:
                refusal, answer = await asyncio.wait_for(future, self.config.read_timeout)
            except asyncio.TimeoutError:  # committed, but not converted yet: the commit is what AA promises
                refusal, answer = None, None
            texts[index] = answer.decode(header.charset) if answer else ack.original_ack(header, refusal)
        return texts

    def _waits(self, header: Header) -> bool:
        """Whether the answer needs the conversion (original mode only: enhanced mode has its application ACK)."""
        if ack.is_enhanced(header, self.config.ack):
            return False
        event = maps().event(header.message_type, header.trigger_event)
        return (self.config.ack_after == "conversion" or (event is not None and event.handler == "merge")
                or (self.config.unknown_patient == "reject" and header.trigger_event not in REGISTERING))

    def _first_answer(self, header: Header) -> str | None:
        """AA, or CA in enhanced mode (None when MSH-15 asks for no commit ACK)."""
        if ack.is_enhanced(header, self.config.ack):
            return ack.commit_ack(header) or ""
        return ack.original_ack(header)

    def _follow_up(self, header: Header, key: str, reply: Reply) -> None:
        """Enhanced mode: the application ACK once converted, on the same connection if it is still open."""
        future = self.settled.wait(key)

        async def send() -> None:
            with contextlib.suppress(asyncio.TimeoutError):
                refusal, _ = await asyncio.wait_for(future, max(self.config.read_timeout, 60.0))
                text = ack.application_ack(header, refusal)
                if text is not None and not reply(ack.encode(text, header.charset)):
                    log.info("hl7v2 %s: the application ACK of %s found its connection closed", self.config.name,
                             header.control_id)
        task = asyncio.create_task(send())
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    def _reply(self, received: Received, outcomes: list[Header | Refusal], texts: dict[int, str | None]
               ) -> bytes | None:
        batch = received.batch
        answers = [texts.get(i) if isinstance(o, Header) else self._refused(o) for i, o in enumerate(outcomes)]
        if batch is None or not batch.is_batch:
            outcome, text = outcomes[0], answers[0]
            if not text:
                return None
            header = outcome if isinstance(outcome, Header) else outcome.header
            return ack.encode(text, header.charset if header else "ascii")
        first = batch.fhs or batch.bhs or batch.messages[0]
        batched = [a if a else ack.original_ack(o if isinstance(o, Header) else o.header)
                   for a, o in zip(answers, outcomes)]
        return ack.encode(ack.batch_ack(batch, batched, read_delimiters(first) or DEFAULT), received.charset)

    def _refused(self, refusal: Refusal) -> str | None:
        header = refusal.header
        if header is not None and ack.is_enhanced(header, self.config.ack):
            return ack.commit_ack(header, refusal)
        return ack.original_ack(header, refusal)

    async def close(self) -> None:
        for task in list(self._replies):
            task.cancel()
