"""HL7 v2 receiving before anything is stored: MLLP framing, normalisation, delimiters, charsets, batches, routing
and structure checks, and the ACKs they lead to. The edge cases of `shared/testdata/hl7v2/edge-cases/` go over a
real MLLP connection to a listener whose handler ACKs AA whatever passes the checks (no storage); their ACKs are
compared with `expected-acks.tsv`. What needs storage (a duplicate's replay, an A40 whose MRG-1 is unknown, a
strict unknown-patient mode) is tested with the inbox and the converter."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import AsyncIterator

import pytest

from hearth.connectors.hl7v2 import ack, frame
from hearth.connectors.hl7v2.escape import DEFAULT, Delimiters, escape, unescape
from hearth.connectors.hl7v2.frame import Header, Policy, Refusal
from hearth.connectors.hl7v2.mllp import END, START, Limits, Listener, read_frames, send, send_raw

EDGE = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "hl7v2" / "edge-cases"
HOST = "127.0.0.1"
SUPPORTED = frozenset({("ADT", e) for e in ("A01", "A02", "A03", "A04", "A05", "A06", "A08", "A11", "A13", "A40")}
                      | {("ORU", "R01"), ("VXU", "V04")} | {("SIU", f"S{n}") for n in range(12, 16)})
POLICY = Policy(SUPPORTED, facilities=frozenset({"EDGEFAC"}))
LIMITS = Limits(max_frame=4096, read_timeout=0.3)
# ERR-2 where the edge-case README gives one (and the note's b4 table for a missing segment)
ERR2 = {"msh10-missing.hl7": "MSH^1^10", "truncated-payload-no-pv1.hl7": "PV1"}


async def _answer(payload: bytes, _reply: object = None) -> bytes | None:
    return ack.reply(frame.receive(payload, POLICY))


async def _too_large(head: bytes, _reply: object = None) -> bytes | None:
    return ack.too_large(head, LIMITS.max_frame)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    listener = Listener(_answer, _too_large, LIMITS)
    await listener.start(HOST, 0)
    yield listener.port
    await listener.stop()


def _acks(payload: bytes) -> list[dict[str, str]]:
    """MSA-1, MSA-2, ERR-2 and ERR-3.1 of each ACK in an answer (one ACK or a batch of them)."""
    text = payload.decode("latin-1")
    fs, cs = text[3], text[4]
    found: list[dict[str, str]] = []
    for segment in filter(None, text.split("\r")):
        fields = segment.split(fs) + [""] * 4
        if fields[0] == "MSA":
            found.append({"msa1": fields[1], "msa2": fields[2]})
        elif fields[0] == "ERR":
            found[-1].update(err2=fields[2], err3=fields[3].split(cs)[0])
    return found


def _segments(payload: bytes) -> list[list[str]]:
    text = payload.decode("latin-1")
    return [s.split(text[3]) for s in filter(None, text.split("\r"))]


def _first(cell: str) -> list[str]:
    """The preferred alternative of an expected-acks.tsv cell, as a list ("AA (AE if run alone)" → ["AA"])."""
    preferred = re.sub(r"\(.*?\)", "", cell.split("|")[0]).strip()
    return [] if preferred in ("", "-") else preferred.split(",")


def _rows() -> list[tuple[str, list[str], list[str], set[str]]]:
    rows = []
    for line in (EDGE / "expected-acks.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _after, _frames, msa1, msa2, err3, _stores = line.split("\t")
        rows.append((name, _first(msa1), _first(msa2), set(_first(err3))))
    return rows


ROWS = _rows()


@pytest.mark.parametrize(("name", "msa1", "msa2", "err3"), ROWS, ids=[row[0] for row in ROWS])
async def test_edge_case_acks_over_mllp(port: int, name: str, msa1: list[str], msa2: list[str],
                                        err3: set[str]) -> None:
    data = (EDGE / name).read_bytes()
    if name.endswith(".mllp"):
        answers = await send_raw(HOST, port, data, expect=max(len(msa1), 1), timeout=1.0 if msa1 else 0.6)
    else:
        answers = await send(HOST, port, [data])
    acks = [a for answer in answers for a in _acks(answer)]
    assert [a["msa1"] for a in acks] == msa1
    assert [a["msa2"] for a in acks] == (msa2 or [""] * len(msa1))
    for a in acks:
        assert a.get("err3", "") in (err3 or {""})
        if name in ERR2:
            assert a["err2"] == ERR2[name]


def test_escape_sequences_decode_after_splitting() -> None:
    [header] = frame.receive((EDGE / "escape-sequences.hl7").read_bytes(), POLICY).messages
    assert isinstance(header, Header)
    d = header.delimiters
    fields = {s[:3]: s.split(d.field) for s in header.text.split("\r") if s[:3] in ("PID", "OBX")}
    pid = fields["PID"]
    assert [unescape(c, d) for c in pid[5].split(d.component)[:2]] == ["Bar|Foo", "Caret^Given"]
    address = pid[11].split(d.component)
    assert [len(c.split(d.subcomponent)) for c in address] == [1] * len(address)  # \T\ split nothing
    assert [unescape(c, d) for c in address[:3]] == ["12 Main St & 3rd Ave", "Apt 1~2", "Back\\slash"]
    obx = [s.split(d.field)[5] for s in header.text.split("\r") if s.startswith("OBX")]
    assert [unescape(v, d, header.charset) for v in obx] == ["Line one\rLine two", "First line\nSecond line"]


def test_custom_delimiters_keep_data_characters() -> None:
    [header] = frame.receive((EDGE / "delimiters-custom-legal.hl7").read_bytes(), POLICY).messages
    assert isinstance(header, Header) and header.delimiters == Delimiters("#", "$", "*", "!", "@")
    pid = next(s for s in header.text.split("\r") if s.startswith("PID")).split("#")
    assert frame.component(pid[11], 1, header.delimiters) == "Bldg 4 | Door ^B"
    assert [frame.component(r, 3, header.delimiters) for r in pid[13].split("*")] == ["PH", "CP"]


async def test_custom_delimiters_are_echoed(port: int) -> None:
    [answer] = await send(HOST, port, [(EDGE / "delimiters-custom-legal.hl7").read_bytes()])
    assert answer.startswith(b"MSH#$*!@#HEARTH#HEARTHFAC#HEARTHTEST#EDGEFAC#")
    assert b"#ACK$A04$ACK#" in answer
    assert answer.endswith(b"\rMSA#AA#EC-02\r")


async def test_latin1_message_is_decoded_and_answered_in_its_charset(port: int) -> None:
    raw = (EDGE / "charset-iso-8859-1-msh18.hl7").read_bytes()
    received = frame.receive(raw, POLICY)
    [header] = received.messages
    assert isinstance(header, Header) and header.charset == "iso8859-1"
    assert "Müller^Jörg" in header.text and "Straße 5^^Köln" in header.text and "Lefèvre^Françoise" in header.text
    [answer] = await send(HOST, port, [raw])
    assert _segments(answer)[0][17] == "8859/1"


async def test_batch_ack_mirrors_the_envelope(port: int) -> None:
    [answer] = await send(HOST, port, [(EDGE / "batch-fhs-bhs-three-messages.hl7").read_bytes()])
    segments = _segments(answer)
    assert [s[0] for s in segments] == ["FHS", "BHS", "MSH", "MSA", "MSH", "MSA", "MSH", "MSA", "BTS", "FTS"]
    fhs, bhs = segments[0], segments[1]
    assert fhs[2:6] == bhs[2:6] == ["HEARTH", "HEARTHFAC", "HEARTHTEST", "EDGEFAC"]
    assert fhs[11] == "FILE-EC-11" and bhs[11] == "BATCH-EC-11"  # FHS-12 / BHS-12: the input's control ids
    assert fhs[10].startswith("H") and fhs[10] != bhs[10]
    assert segments[-2] == ["BTS", "3"] and segments[-1] == ["FTS", "1"]


async def test_two_messages_in_one_frame_get_a_batch_ack(port: int) -> None:
    two = (EDGE / "z-segments.hl7").read_bytes() + (EDGE / "escape-sequences.hl7").read_bytes()
    [answer] = await send(HOST, port, [two])
    assert [s[0] for s in _segments(answer)] == ["BHS", "MSH", "MSA", "MSH", "MSA", "BTS"]
    assert [(a["msa1"], a["msa2"]) for a in _acks(answer)] == [("AA", "EC-07"), ("AA", "EC-05")]
    assert _segments(answer)[-1] == ["BTS", "2"]


async def test_bom_newlines_blank_segments_and_trailing_spaces(port: int) -> None:
    raw = (EDGE / "z-segments.hl7").read_bytes()
    variants = [raw.replace(b"\r", b"\r\n"), raw.replace(b"\r", b"\n"), frame.BOM + raw.replace(b"\r", b"\n"),
                raw.replace(b"\r", b"  \r\r \r"), b"\r\n" + raw + b"\n\x00", frame.BOM + raw[:-1]]
    answers = await send(HOST, port, variants)
    assert [(a["msa1"], a["msa2"], "err3" in a) for answer in answers for a in _acks(answer)] == \
        [("AA", "EC-07", False)] * len(variants)


def test_normalise() -> None:
    assert frame.normalise(frame.BOM + b"MSH|a \r\nPID|1  \n\n  \rPV1\r\n\x00") == b"MSH|a\rPID|1\rPV1\r"
    assert frame.normalise(b"MSH|^~\\&|A\rPID|1") == b"MSH|^~\\&|A\rPID|1\r"


def _message(msh9: str = "ADT^A01^ADT_A01", control: str = "T-1", version: str = "2.5.1",
             facility: str = "EDGEFAC", msh15: str = "", msh16: str = "", msh18: str = "",
             body: str = "EVN|A01|20240315090000\rPID|1||T100^^^EDGEFAC^MR||DOE^JOHN\rPV1|1|O\r") -> bytes:
    msh = (f"MSH|^~\\&|HEARTHTEST|{facility}|HEARTH|HEARTHFAC|20240315090000||{msh9}|{control}|P|{version}"
           f"|||{msh15}|{msh16}||{msh18}\r")
    return (msh + body).encode("latin-1")


REFUSALS = {
    "type": (_message("BAR^P01^BAR_P01"), "AR", "200", "MSH^1^9"),
    "event": (_message("ADT^A99"), "AR", "201", "MSH^1^9^2"),
    "version": (_message(version="3.0"), "AR", "203", "MSH^1^12"),
    "no version": (_message(version=""), "AR", "203", "MSH^1^12"),
    "facility": (_message(facility="OTHERFAC^1.2.3^ISO"), "AR", "207", "MSH^1^4"),
    "charset unknown": (_message(msh18="UNICODE UTF-16"), "AR", "207", "MSH^1^18"),
    "not utf-8": (_message(msh18="UNICODE UTF-8", body="PID|1||T1^^^X^MR||M\xfcller\rPV1|1|O\r"), "AE", "102",
                  "MSH^1^18"),
    "not ascii": (_message(msh18="ASCII", body="PID|1||T1^^^X^MR||M\xfcller\rPV1|1|O\r"), "AE", "102",
                  "MSH^1^18"),
    "no PID": (_message(body="EVN|A01\rPV1|1|O\r"), "AE", "100", "PID"),
    "PID-3 empty": (_message(body="PID|1||^^^EDGEFAC^MR||DOE\rPV1|1|O\r"), "AE", "101", "PID^1^3"),
    "A40 no MRG": (_message("ADT^A40^ADT_A39", body="PID|1||T1^^^X^MR\r"), "AE", "100", "MRG"),
    "A40 pair without MRG": (_message("ADT^A40^ADT_A39", body="PID|1||T1\rMRG|T2\rPID|2||T3\r"), "AE", "100",
                             "MRG"),
    "MRG-1 empty": (_message("ADT^A40^ADT_A39", body="PID|1||T1^^^X^MR\rMRG|^^^X^MR\r"), "AE", "101", "MRG^1^1"),
    "second PID-3 empty": (_message("ADT^A40^ADT_A39", body="PID|1||T1\rMRG|T2\rPID|2\rMRG|T4\r"), "AE", "101",
                           "PID^2^3"),
    "ORU no OBR": (_message("ORU^R01^ORU_R01", body="PID|1||T1\rOBX|1|NM|X||1\r"), "AE", "100", "OBR"),
    "VXU no RXA": (_message("VXU^V04^VXU_V04", body="PID|1||T1\rORC|RE\r"), "AE", "100", "RXA"),
    "SIU no SCH": (_message("SIU^S12^SIU_S12", body="PID|1||T1\r"), "AE", "100", "SCH"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case: str) -> None:
    raw, msa1, err3, err2 = REFUSALS[case]
    [a] = _acks(ack.reply(frame.receive(raw, POLICY)) or b"")
    assert (a["msa1"], a["msa2"], a["err3"], a["err2"]) == (msa1, "T-1", err3, err2)


async def test_refusals_on_one_connection_are_answered_in_order(port: int) -> None:
    answers = await send(HOST, port, [raw for raw, *_ in REFUSALS.values()] + [_message(control="LAST")])
    assert [(a["msa1"], a.get("err3")) for answer in answers for a in _acks(answer)] == \
        [(msa1, err3) for _, msa1, err3, _ in REFUSALS.values()] + [("AA", None)]


@pytest.mark.parametrize("raw", [b"EVN|A01\rPID|1\r", b"MSH|^~\\&\x00|A\r", b"MSH", b"", b"MSH|^~\\~|A\r"])
def test_unreadable_header_is_ar_with_default_delimiters(raw: bytes) -> None:
    answer = ack.reply(frame.receive(raw, POLICY)) or b""
    assert answer.startswith(b"MSH|^~\\&|||||")
    assert [(a["msa1"], a["msa2"], a["err3"]) for a in _acks(answer)] == [("AR", "", "102")]


def test_segment_before_the_first_msh_is_a_sequence_error() -> None:
    raw = b"FHS|^~\\&|A\rEVN|A01\r" + _message()
    [a] = _acks(ack.reply(frame.receive(raw, POLICY)) or b"")
    assert (a["msa1"], a["err3"], a["err2"]) == ("AR", "100", "EVN")


def test_a_refused_message_in_a_batch_does_not_refuse_the_others() -> None:
    raw = b"BHS|^~\\&|S|F\r" + _message(control="B-1") + _message(control="") + _message(control="B-3") + b"BTS|3\r"
    acks = _acks(ack.reply(frame.receive(raw, POLICY)) or b"")
    assert [(a["msa1"], a["msa2"], a.get("err3")) for a in acks] == \
        [("AA", "B-1", None), ("AE", "", "101"), ("AA", "B-3", None)]


def test_err_before_v25_uses_err1() -> None:
    answer = (ack.reply(frame.receive(_message(control="", version="2.3"), POLICY)) or b"").decode()
    assert "\rMSA|AE||MSH-10 (message control id) is empty\r" in answer
    assert answer.endswith("\rERR|MSH^1^10^^101&Required field missing&HL70357\r")


def test_err_v25_form() -> None:
    answer = (ack.reply(frame.receive(_message(facility="NOPE"), POLICY)) or b"").decode()
    assert answer.endswith("\rMSA|AR|T-1\r"
                           "ERR||MSH^1^4|207^Application internal error^HL70357|E||||"
                           "sending facility NOPE is not allowed here\r")


def test_ack_header() -> None:
    answer = (ack.reply(frame.receive(_message(), POLICY)) or b"").decode()
    msh = answer.split("\r")[0].split("|")
    assert msh[:6] == ["MSH", "^~\\&", "HEARTH", "HEARTHFAC", "HEARTHTEST", "EDGEFAC"]
    assert re.fullmatch(r"\d{14}\.\d{4}[+-]\d{4}", msh[6])
    assert msh[8:] == ["ACK^A01^ACK", msh[9], "P", "2.5.1"] and re.fullmatch(r"H\d{19}", msh[9])


@pytest.mark.parametrize(("msh15", "msh10", "expected"), [
    ("AL", "E-1", "CA"), ("", "E-1", "CA"), ("ER", "E-1", None), ("ER", "", "CE"), ("SU", "E-1", "CA"),
    ("SU", "", None), ("NE", "E-1", None), ("NE", "", None),
])
def test_enhanced_commit_ack_follows_msh15(msh15: str, msh10: str, expected: str | None) -> None:
    raw = _message(control=msh10, msh15=msh15, msh16="AL")
    answer = ack.reply(frame.receive(raw, POLICY))
    if expected is None:
        assert answer is None
        return
    assert answer is not None and [a["msa1"] for a in _acks(answer)] == [expected]
    assert _segments(answer)[0][14:16] == ["NE", "NE"]


def test_enhanced_commit_refused_is_cr_and_original_mode_can_be_forced() -> None:
    refused = frame.receive(_message("BAR^P01", msh15="AL", msh16="AL"), POLICY)
    assert [a["msa1"] for a in _acks(ack.reply(refused) or b"")] == ["CR"]
    forced = frame.receive(_message(msh15="AL", msh16="AL"), POLICY)
    answer = ack.reply(forced, "original") or b""
    assert [a["msa1"] for a in _acks(answer)] == ["AA"] and len(_segments(answer)[0]) == 12
    assert [a["msa1"] for a in _acks(ack.reply(frame.receive(_message(), POLICY), "enhanced") or b"")] == ["CA"]


@pytest.mark.parametrize(("msh16", "failed", "expected"), [
    ("AL", False, "AA"), ("AL", True, "AE"), ("", False, "AA"), ("ER", False, None), ("ER", True, "AE"),
    ("SU", False, "AA"), ("SU", True, None), ("NE", True, None),
])
def test_application_ack_follows_msh16(msh16: str, failed: bool, expected: str | None) -> None:
    header = frame.read_header(frame.normalise(_message(msh15="AL", msh16=msh16)))
    assert isinstance(header, Header)
    refusal = Refusal("AE", 207, (), "conversion failed: no such code", header) if failed else None
    text = ack.application_ack(header, refusal)
    if expected is None:
        assert text is None
        return
    assert text is not None and [a["msa1"] for a in _acks(text.encode())] == [expected]


async def test_no_answer_when_msh15_says_never_and_the_next_frame_is_answered(port: int) -> None:
    wire = START + _message(control="Q-1", msh15="NE", msh16="NE") + END + START + _message(control="Q-2") + END
    answers = await send_raw(HOST, port, wire, expect=1)  # answers keep frame order: Q-1's would come first
    assert [(a["msa1"], a["msa2"]) for answer in answers for a in _acks(answer)] == [("AA", "Q-2")]


async def test_junk_before_start_block_and_resync(port: int) -> None:
    first, second = _message(control="R-1"), _message(control="R-2")
    wire = b"garbage\r\n" + START + first[:40] + START + first + END + b"\x1c\r" + START + second + END
    answers = await send_raw(HOST, port, wire, expect=2)
    assert [a["msa2"] for answer in answers for a in _acks(answer)] == ["R-1", "R-2"]


async def test_truncated_frame_then_resync_on_the_same_connection(port: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write((EDGE / "truncated-mllp-frame-no-end-block.mllp").read_bytes())
        assert await read_frames(reader, 1, 0.2) == []
        writer.write(START + _message(control="S-1") + END)
        [answer] = await read_frames(reader, 1, 2.0)
        assert [(a["msa1"], a["msa2"]) for a in _acks(answer)] == [("AA", "S-1")]
    finally:
        writer.close()


async def test_read_timeout_drops_a_silent_partial_frame(port: int) -> None:
    raw = _message(control="T-9")
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(START + raw[:50])
        await asyncio.sleep(LIMITS.read_timeout + 0.2)
        writer.write(raw[50:] + END + START + _message(control="T-10") + END)
        answers = await read_frames(reader, 1, 2.0)  # had the halves been joined, T-9 would be answered first
        assert [a["msa2"] for answer in answers for a in _acks(answer)] == ["T-10"]
    finally:
        writer.close()


async def test_frame_split_into_single_bytes(port: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        for byte in START + _message(control="B-1") + END:
            writer.write(bytes([byte]))
            await writer.drain()
        [answer] = await read_frames(reader, 1, 2.0)
        assert _acks(answer)[0]["msa2"] == "B-1"
    finally:
        writer.close()


async def test_too_large_frame_is_refused_and_skipped(port: int) -> None:
    big = _message(control="BIG", body="PID|1||T1\rNTE|1||" + "x" * (LIMITS.max_frame + 10) + "\rPV1|1|O\r")
    answers = await send(HOST, port, [big, _message(control="AFTER")])
    acks = [a for answer in answers for a in _acks(answer)]
    assert [(a["msa1"], a["msa2"], a.get("err3")) for a in acks] == [("AR", "BIG", "207"), ("AA", "AFTER", None)]


async def test_answers_keep_frame_order_and_connections_run_concurrently() -> None:
    release = asyncio.Event()
    running = 0
    most = 0

    async def handle(payload: bytes, _reply: object = None) -> bytes:
        nonlocal running, most
        running += 1
        most = max(most, running)
        if payload == b"wait":
            await release.wait()
        await asyncio.sleep(0.002 * (payload[-1] % 3))
        running -= 1
        return b"re:" + payload

    async with Listener(handle, limits=Limits(max_pending=2)) as listener:
        await listener.start(HOST, 0)
        blocked = asyncio.create_task(send(HOST, listener.port, [b"wait", b"after"]))
        payloads = [f"m{i}".encode() for i in range(30)]
        assert await send(HOST, listener.port, payloads) == [b"re:" + p for p in payloads]
        assert not blocked.done()
        release.set()
        assert await blocked == [b"re:wait", b"re:after"]
    assert most == 2  # one per connection


async def test_failing_handler_gives_no_answer_and_the_connection_goes_on() -> None:
    async def handle(payload: bytes, _reply: object = None) -> bytes:
        if payload == b"boom":
            raise RuntimeError("handler bug")
        return payload

    async with Listener(handle) as listener:
        await listener.start(HOST, 0)
        wire = START + b"boom" + END + START + b"fine" + END
        assert await send_raw(HOST, listener.port, wire, expect=1) == [b"fine"]


async def test_answers_still_go_out_after_the_peer_stops_writing(port: int) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(START + _message(control="EOF-1") + END)
    writer.write_eof()
    [answer] = await read_frames(reader, 1, 2.0)
    assert _acks(answer)[0]["msa2"] == "EOF-1"
    assert await reader.read() == b""
    writer.close()


async def test_stop_answers_the_frames_already_read() -> None:
    started = asyncio.Event()

    async def handle(payload: bytes, _reply: object = None) -> bytes:
        started.set()
        await asyncio.sleep(0.1)
        return b"done:" + payload

    listener = Listener(handle)
    await listener.start(HOST, 0)
    reader, writer = await asyncio.open_connection(HOST, listener.port)
    writer.write(START + b"x" + END)
    await started.wait()
    await listener.stop(grace=2.0)
    assert await read_frames(reader, 1, 1.0) == [b"done:x"]
    assert await reader.read() == b""
    writer.close()


def test_read_delimiters() -> None:
    assert frame.read_delimiters("MSH|^~\\&|A") == DEFAULT
    assert frame.read_delimiters("MSH#$*!@#A") == Delimiters("#", "$", "*", "!", "@")
    assert frame.read_delimiters("MSH|^~\\&#|A") == Delimiters(truncation="#")
    assert frame.read_delimiters("MSH|^~\\|A") == Delimiters(subcomponent="")
    assert frame.read_delimiters("BHS|^~\\&") == DEFAULT and frame.read_delimiters("FHS|^~\\&|") == DEFAULT
    for bad in ("MSH^~\\&|HEARTHTEST|EDGEFAC|ADT^A04", "MSH|^~|A", "MSH|^~\\&#$|A", "MSH|^~~&|A", "MSH|^~\\A|A",
                "MSH|^|\\&|A", "MSH ^~\\&", "MSHA^~\\&A", "MSH|^ \\&|A", "EVN|^~\\&|A", "MSH|"):
        assert frame.read_delimiters(bad) is None, bad


def test_header_fields() -> None:
    header = frame.read_header(frame.normalise(_message(facility="EDGE\\T\\FAC^1.2.3^ISO", msh15="al")))
    assert isinstance(header, Header)
    assert header.sending_facility == "EDGE&FAC" and header.field(4) == "EDGE\\T\\FAC^1.2.3^ISO"
    assert (header.message_type, header.trigger_event, header.control_id, header.version) == \
        ("ADT", "A01", "T-1", "2.5.1")
    assert (header.accept_ack, header.application_ack, header.charset_name, header.charset) == \
        ("AL", "", "", "utf-8")


def test_charset_names() -> None:
    assert frame.charset_codec("", "UNICODE UTF-8") == "utf-8"
    assert frame.charset_codec("8859/1", "ASCII") == frame.charset_codec("ISO IR100", "") == "iso8859-1"
    assert frame.charset_codec(" unicode  utf-8 ", "") == "utf-8"
    assert frame.charset_codec("8859/15", "") == "iso8859-15"
    assert frame.charset_codec("UNICODE UTF-16", "") is None and frame.charset_codec("", "EBCDIC") is None


def test_split_batch() -> None:
    batch = frame.split_batch("FHS|^~\\&|F\rBHS|^~\\&|B\rMSH|^~\\&|1\rPID|1\rMSH|^~\\&|2\rBTS|2\rFTS|1\r")
    assert batch.messages == ("MSH|^~\\&|1\rPID|1\r", "MSH|^~\\&|2\r")
    assert (batch.fhs, batch.bhs, batch.stray, batch.is_batch) == ("FHS|^~\\&|F", "BHS|^~\\&|B", (), True)
    assert not frame.split_batch("MSH|^~\\&|1\rPID|1\r").is_batch


@pytest.mark.parametrize(("text", "expected"), [
    ("Bar\\F\\Foo", "Bar|Foo"), ("Caret\\S\\Given", "Caret^Given"), ("12 Main St \\T\\ 3rd Ave", "12 Main St & 3rd Ave"),
    ("Apt 1\\R\\2", "Apt 1~2"), ("Back\\E\\slash", "Back\\slash"), ("Line one\\X0D\\Line two", "Line one\rLine two"),
    ("First line\\.br\\Second line", "First line\nSecond line"), ("a\\.sp2\\b", "a\n\nb"), ("a\\.sp\\b", "a\nb"),
    ("a\\.fi\\b\\.nf\\c\\.in+4\\d\\.ti-2\\e", "abcde"), ("a\\.sk3\\b", "a   b"), ("\\.ce\\Title", "\nTitle"),
    ("\\H\\bold\\N\\ text", "bold text"), ("M\\XC3BC\\ller", "Müller"), ("\\X4142\\", "AB"),
    ("C:\\temp\\file", "C:\\temp\\file"), ("\\Zlocal\\", "\\Zlocal\\"), ("\\XC3\\", "\\XC3\\"),
    ("\\X0\\", "\\X0\\"), ("\\XZZ\\", "\\XZZ\\"), ("tail\\", "tail\\"), ("\\\\", "\\\\"), ("a\\C2842\\b", "ab"),
    ("a\\M2442\\b", "ab"), ("no escapes", "no escapes"), ("\\P\\", "\\P\\"),
])
def test_unescape(text: str, expected: str) -> None:
    assert unescape(text, DEFAULT, "utf-8") == expected


def test_unescape_custom_delimiters_and_charset() -> None:
    custom = Delimiters("#", "$", "*", "!", "@", "%")
    assert unescape("Bldg 4 !F! Door !S!B!E!!P!", custom) == "Bldg 4 # Door $B!%"
    assert unescape("Bldg 4 | Door ^B\\F\\", custom) == "Bldg 4 | Door ^B\\F\\"
    assert unescape("M\\XFC\\ller", DEFAULT, "iso8859-1") == "Müller"
    assert unescape("M\\XFC\\ller", DEFAULT, "utf-8") == "M\\XFC\\ller"
    assert unescape("\\T\\", Delimiters(subcomponent="")) == "\\T\\"


@pytest.mark.parametrize("delimiters", [DEFAULT, Delimiters("#", "$", "*", "!", "@", "%")])
def test_escape_round_trip(delimiters: Delimiters) -> None:
    text = "a|b^c&d~e\\f#g$h*i!j@k%l\rm\nn\to Müller"
    escaped = escape(text, delimiters)
    assert not set(escaped) & set(delimiters.field + delimiters.component + delimiters.repetition
                                  + delimiters.subcomponent + delimiters.truncation + "\r\n\t")
    assert unescape(escaped, delimiters) == text


def test_escape_forms() -> None:
    assert escape("a|b^c&d~e\\f\rg") == "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X0D\\g"


def test_control_ids_are_unique() -> None:
    ids = [ack.CONTROL_IDS.next() for _ in range(20000)]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"H\d{19}", i) for i in ids)
