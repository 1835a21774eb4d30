"""The HL7 v2 connector's receive path end to end, over a real MLLP connection to a running Hearth, on both
backends: every edge case gets its documented ACK and stores what it should (nothing for a refused one, once for
a duplicate), the ACK waits for the commit, a merge's ACK for its conversion, enhanced mode, several connections at
once, and the same path over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from hearth.connectors.hl7v2.mllp import END, START, frame
from hl7v2_helpers import EDGE, acks, edge, feed, sample  # noqa: F401  (feed is a fixture)

ADT_A04 = ("MSH|^~\\&|SENDER|SENDFAC|HEARTH|HEARTHFAC|20240315090000||ADT^A04^ADT_A01|{id}|P|2.5.1\r"
           "EVN|A04|20240315090000\r"
           "PID|1||{mrn}^^^SENDFAC^MR||Tester^Tess||19800101|F\r"
           "PV1|1|O|CLINIC^1^A||||||||||||||||V{mrn}^^^SENDFAC^VN\r")


def adt(control_id: str, mrn: str) -> bytes:
    return ADT_A04.format(id=control_id, mrn=mrn).encode()


def _expected() -> list[tuple[str, str, list[str], list[str], set[str]]]:
    """(file, send_after, MSA-1s, MSA-2s, ERR-3s) of expected-acks.tsv, preferred alternatives."""
    import re
    rows = []
    for line in (EDGE / "expected-acks.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, after, _frames, msa1, msa2, err3, _stores = line.split("\t")

        def first(cell: str) -> list[str]:
            preferred = re.sub(r"\(.*?\)", "", cell.split("|")[0]).strip()
            return [] if preferred in ("", "-") else preferred.split(",")
        rows.append((name, after, first(msa1), first(msa2), set(first(err3))))
    return rows


async def test_every_edge_case_gets_its_ack_in_the_documented_order(feed):
    await feed.start(sending_facilities=["EDGEFAC"])
    rows = _expected()
    order = [r for r in rows if not r[1]] + [r for r in rows if r[1]]  # "send_after" ones after the others
    for name, _after, msa1, msa2, err3 in order:
        raw = edge(name)
        if name.endswith(".mllp"):
            answers = await feed.send_raw(raw, max(len(msa1), 1), timeout=1.5 if not msa1 else 10)
        else:
            answers = await feed.send(raw)
        got = [a for answer in answers for a in acks(answer)]
        assert [a["msa1"] for a in got] == msa1, name
        if msa2:
            assert [a["msa2"] for a in got] == msa2, name
        if err3:
            assert got[0].get("err3") in err3, name
        await feed.converged()
    assert await feed.dead_letters() == []


async def test_a_refused_message_stores_nothing(feed):
    await feed.start(sending_facilities=["EDGEFAC"])
    for name in ("msh-wrong-field-separator.hl7", "msh10-missing.hl7", "truncated-payload-no-pv1.hl7"):
        await feed.send(edge(name))
    await feed.converged()
    assert await feed.find("Patient") == []
    assert await feed.find("Encounter") == []
    pending, _ = await feed.connector.inbox.counts("adt")
    assert pending == 0


async def test_a_duplicate_gets_the_same_answer_and_stores_nothing_twice(feed):
    await feed.start()
    first = await feed.send(adt("DUP-1", "D100"))
    await feed.converged()
    again = await feed.send(adt("DUP-1", "D100"))
    assert again == first  # byte for byte: the stored answer
    twice = await feed.send_raw(edge("msh10-duplicate-same-message-twice.mllp"), 2)
    assert [a["msa1"] for answer in twice for a in acks(answer)] == ["AA", "AA"]
    await feed.converged()
    patient = await feed.one("Patient", identifier="SENDFAC|D100")
    assert patient["meta"]["versionId"] == "1"
    twice_patient = await feed.one("Patient", identifier="EDGEFAC|EC0400")
    assert twice_patient["meta"]["versionId"] == "1"
    assert len(await feed.find("Encounter", identifier="EDGEFAC|V-EC0400")) == 1
    status = await feed.connector.status()
    assert status["counters"]["duplicates"] == 2
    assert status["counters"]["accepted"] == 2


async def test_a_resent_message_with_a_new_control_id_makes_no_new_version(feed):
    await feed.start()
    await feed.send(adt("R-1", "R200"))
    await feed.converged()
    await feed.send(adt("R-2", "R200"))
    await feed.converged()
    patient = await feed.one("Patient", identifier="SENDFAC|R200")
    encounter = await feed.one("Encounter", identifier="SENDFAC|VR200")
    # meta.source names the message, so the second message's version says where it came from
    assert patient["meta"]["source"].endswith(":R-2")
    assert patient["meta"]["versionId"] == "2" and encounter["subject"]["reference"] == f"Patient/{patient['id']}"


async def test_several_connections_at_once(feed):
    await feed.start()
    batches = [[adt(f"C{c}-{n}", f"C{c}{n:03d}") for n in range(25)] for c in range(4)]
    answers = await asyncio.gather(*(feed.send(*batch) for batch in batches))
    for batch, answered in zip(batches, answers):
        got = [acks(a)[0] for a in answered]
        assert [a["msa1"] for a in got] == ["AA"] * 25
        assert [a["msa2"] for a in got] == [m.split(b"|")[9].decode() for m in batch]  # in frame order
    await feed.converged()
    assert len(await feed.find("Patient")) == 100


async def test_a_merge_is_answered_after_its_conversion(feed):
    await feed.start()
    alone = await feed.send(edge("adt-a40-merge.hl7"))
    assert acks(alone[0]) == [{"msa1": "AE", "msa2": "EC-12", "err2": "MRG^1^1", "err3": "204"}]
    assert await feed.find("Patient") == []
    again = await feed.send(edge("adt-a40-merge.hl7"))
    assert again == alone  # a duplicate gets the first answer
    await feed.send(edge("batch-fhs-bhs-three-messages.hl7"))
    await feed.converged()
    # sent again with a new control id, once the patients exist, it is merged
    resent = edge("adt-a40-merge.hl7").replace(b"|EC-12|", b"|EC-12b|")
    merged = await feed.send(resent)
    assert acks(merged[0]) == [{"msa1": "AA", "msa2": "EC-12b"}]


async def test_enhanced_mode_commit_ack_then_application_ack(feed):
    await feed.start()
    message = adt("ENH-1", "E100").replace(b"|P|2.5.1\r", b"|P|2.5.1|||AL|AL\r")
    reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
    try:
        writer.write(frame(message))
        await writer.drain()
        from hearth.connectors.hl7v2.mllp import read_frames
        answers = await read_frames(reader, 2, 10)
    finally:
        writer.close()
    assert [acks(a)[0]["msa1"] for a in answers] == ["CA", "AA"]
    assert all(acks(a)[0]["msa2"] == "ENH-1" for a in answers)
    never = adt("ENH-2", "E200").replace(b"|P|2.5.1\r", b"|P|2.5.1|||NE|NE\r")
    assert await feed.send(never, timeout=1) == []  # nothing is sent, and it is stored all the same
    await feed.converged()
    assert len(await feed.find("Patient", identifier="SENDFAC|E200")) == 1


async def test_ack_after_conversion_answers_a_failed_conversion_with_ae(feed):
    await feed.start(ack_after="conversion")
    answer = await feed.send(adt("AC-1", "A100").replace(b"||19800101|", b"||19801301|"))  # month 13
    got = acks(answer[0])[0]
    assert (got["msa1"], got["err2"], got["err3"]) == ("AE", "PID^1^7", "207")
    letters = await feed.dead_letters()
    assert [letter["reason"] for letter in letters] == ["conversion"]
    assert "PID-7" in letters[0]["error"]
    assert letters[0]["url"] == "urn:hl7v2:adt:SENDER:SENDFAC:AC-1"
    assert "PID|1||A100" in letters[0]["raw"]
    assert await feed.find("Patient") == []  # all or nothing: no patient without its encounter


async def test_a_dead_letter_is_retried_after_a_mapping_fix(feed, monkeypatch):
    from hearth.connectors.hl7v2 import converter

    def broken(*args, **kwargs):
        future = asyncio.get_running_loop().create_future()
        future.set_exception(converter.ConversionError("PV1-3: a mapping defect", ("PV1", "1", "3")))
        return future
    real = converter.convert_soon
    monkeypatch.setattr(converter, "convert_soon", broken)
    await feed.start()
    await feed.send(adt("FIX-1", "F100"), adt("FIX-2", "F200"))
    await feed.converged()
    letters = await feed.dead_letters()
    assert [letter["reason"] for letter in letters] == ["conversion", "conversion"]
    assert await feed.find("Patient") == []
    monkeypatch.setattr(converter, "convert_soon", real)  # the mapping is fixed
    results = await feed.made[-1].retry("adt")
    assert [r["result"] for r in results] == ["stored", "stored"]
    assert await feed.dead_letters() == []
    assert len(await feed.find("Encounter", identifier="SENDFAC|VF100")) == 1
    assert len(await feed.find("Patient")) == 2


async def test_frames_split_across_writes_and_junk_between_them(feed):
    await feed.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", feed.port)
    try:
        wire = b"junk" + frame(adt("S-1", "S100")) + b"\r\n" + frame(adt("S-2", "S200"))
        for at in range(0, len(wire), 7):
            writer.write(wire[at:at + 7])
            await writer.drain()
        from hearth.connectors.hl7v2.mllp import read_frames
        answers = await read_frames(reader, 2, 10)
    finally:
        writer.close()
    assert [acks(a)[0]["msa2"] for a in answers] == ["S-1", "S-2"]
    assert START not in answers[0] and END not in answers[0]


async def test_hl7v2_over_http(feed):
    await feed.start(http=True)
    answer = await feed.client.post("/hl7v2/adt", content=adt("H-1", "H100"),
                                    headers={"Content-Type": "x-application/hl7-v2+er7"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("x-application/hl7-v2+er7")
    assert acks(answer.content) == [{"msa1": "AA", "msa2": "H-1"}]
    wrong = await feed.client.post("/hl7v2/adt", json={"resourceType": "Patient"})
    assert wrong.status_code == 415 and wrong.json()["resourceType"] == "OperationOutcome"
    unknown = await feed.client.post("/hl7v2/nope", content=adt("H-2", "H200"),
                                     headers={"Content-Type": "x-application/hl7-v2+er7"})
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
    await feed.converged()
    assert len(await feed.find("Patient", identifier="SENDFAC|H100")) == 1


async def test_http_is_off_unless_the_connector_says_so(feed):
    await feed.start()
    refused = await feed.client.post("/hl7v2/adt", content=adt("H-3", "H300"),
                                     headers={"Content-Type": "x-application/hl7-v2+er7"})
    assert refused.status_code == 404


@pytest.mark.parametrize("name, msa1, err3", [("BAR-P01-01.hl7", "AR", "200"), ("SIU_12.hl7", "AR", "201")])
async def test_unsupported_types_are_refused_and_store_nothing(feed, name, msa1, err3):
    await feed.start()
    [answer] = await feed.send(sample(name, control_id=f"U-{name}"))
    got = acks(answer)[0]
    assert (got["msa1"], got["err3"]) == (msa1, err3)
    assert await feed.find("Patient") == []


async def test_unknown_patient_reject_mode(feed):
    await feed.start(unknown_patient="reject")
    [update] = await feed.send(adt("UP-1", "U100").replace(b"ADT^A04", b"ADT^A08"))
    assert acks(update) == [{"msa1": "AE", "msa2": "UP-1", "err2": "PID^1^3", "err3": "204"}]
    assert await feed.find("Patient") == []
    [registration] = await feed.send(adt("UP-2", "U100"))  # an A04 registers the patient
    assert acks(registration)[0]["msa1"] == "AA"
    [known] = await feed.send(adt("UP-3", "U100").replace(b"ADT^A04", b"ADT^A08"))
    assert acks(known)[0]["msa1"] == "AA"
    assert len(await feed.find("Patient", identifier="SENDFAC|U100")) == 1


@pytest.mark.parametrize("keep", [True, False])
async def test_z_segments_are_kept_as_text_or_dropped(feed, keep):
    await feed.start(z_segments="keep" if keep else "drop")
    [answer] = await feed.send(edge("z-segments.hl7"))
    assert acks(answer) == [{"msa1": "AA", "msa2": "EC-07"}]
    await feed.converged()
    patient = await feed.one("Patient", identifier="EDGEFAC|EC0700")
    kept = [e["valueString"] for e in patient.get("extension", []) if e["url"] == "urn:hearth:hl7v2:z-segment"]
    assert [z[:3] for z in kept] == (["ZPI", "ZVI", "ZZZ"] if keep else [])
