"""Every sample message of shared/testdata/hl7v2 over MLLP (MSH-10 made unique, original-mode ACKs): the types
Hearth converts are accepted and converted without a dead letter; the others are refused with AR 200 or 201 and
store nothing. SQLite only: the conversion itself is the same code on both backends (test_hl7v2_fhir.py)."""

from __future__ import annotations

import pytest

from hearth.connectors.hl7v2.frame import normalise, read_header
from hearth.connectors.hl7v2.maps import maps
from hl7v2_helpers import HL7V2, acks, feed, sample  # noqa: F401  (feed is a fixture)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_every_sample(feed, backend):
    await feed.start()
    names = sorted(path.name for path in HL7V2.glob("*.hl7"))
    assert len(names) >= 130
    supported, refused = [], []
    for name in names:
        header = read_header(normalise((HL7V2 / name).read_bytes()))
        known = maps().event(header.message_type, header.trigger_event) is not None
        [answer] = await feed.send(sample(name, control_id=f"S-{name[:-4]}"))
        got = acks(answer)[0]
        if header.trigger_event == "A40":  # no sample registers the patients their MRG-1 names
            assert (got["msa1"], got.get("err2"), got.get("err3")) == ("AE", "MRG^1^1", "204"), (name, got)
        elif known:
            assert got["msa1"] == "AA", (name, got)
            supported.append(name)
        else:
            assert (got["msa1"], got.get("err3")) in (("AR", "200"), ("AR", "201")), (name, got)
            refused.append(name)
    await feed.converged(timeout=120)
    letters = await feed.dead_letters()
    assert [(letter["url"], letter["error"]) for letter in letters] == []
    assert (len(supported), len(refused)) == (42, 95)  # of the 139 samples; the other two are the A40s
    status = await feed.connector.status()
    assert status["counters"]["converted"] == len(supported)
