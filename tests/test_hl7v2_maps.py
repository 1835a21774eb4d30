"""The generated HL7 v2-to-FHIR maps: reproducible from the IG's CSVs, right where it matters, conditions compiled."""

from __future__ import annotations

import json

import pytest

from hearth.connectors.hl7v2 import generate, maps as maps_module
from hearth.connectors.hl7v2.maps import DATA, Maps, Step, compile_condition

ISSUE_EVENTS = ["ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A05", "ADT^A06", "ADT^A08", "ADT^A11", "ADT^A13",
                "ADT^A40", "ORU^R01", "VXU^V04", "SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15"]


@pytest.fixture(scope="module")
def m() -> Maps:
    return maps_module.maps()


def fields(m: Maps, segment: str, number: int) -> list:
    return list(m.segment(segment).field(number))


def first_path(rules: list, path: tuple) -> list:
    return [r for r in rules if r.path[:len(path)] == path]


def test_regenerating_reproduces_the_committed_data_byte_for_byte(tmp_path):
    assert generate.DEFAULT_MAPPINGS.is_dir(), f"the IG's tables are expected at {generate.DEFAULT_MAPPINGS}"
    written = generate.generate(generate.DEFAULT_MAPPINGS, tmp_path)
    committed = sorted(p.name for p in DATA.glob("*.json"))
    assert sorted(written) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), f"{name} drifted from the generator"


def test_pid_identifiers_names_birth_date_and_gender(m):
    pid3 = fields(m, "PID[Patient]", 3)
    assert [(r.path, r.dt) for r in pid3] == [((Step("identifier", 2),), "CX[Identifier]")]
    assert [(r.path, r.dt) for r in fields(m, "PID[Patient]", 5)] == [((Step("name", 1),), "XPN[HumanName]")]
    birth = fields(m, "PID[Patient]", 7)
    assert birth[0].path == (Step("birthDate"),) and birth[0].fhir == "date" and birth[0].condition is None
    assert birth[1].condition == {"len_gt": [{"ref": "PID-7"}, 8]}
    assert birth[1].assign == {"const": "http://hl7.org/fhir/StructureDefinition/patient-birthTime"}
    gender, = fields(m, "PID[Patient]", 8)
    assert gender.path == (Step("gender"),) and gender.vocab == "administrativesex"
    sex = m.vocabulary(gender.vocab)
    assert {code: sex.get(code).code for code in "MFUOAN"} == {
        "M": "male", "F": "female", "U": "unknown", "O": "other", "A": "other", "N": "other"}
    assert sex.get("F").system == "http://hl7.org/fhir/administrative-gender" and sex.table == "HL70001"
    # PID-19: the override picks the US 'SS' alternative, the 'SB' row is dropped
    ssn = [r.assign for r in fields(m, "PID[Patient]", 19) if r.assign]
    assert {"const": "SS"} in ssn and {"const": "SB"} not in ssn
    assert {"const": "http://hl7.org/fhir/sid/us-ssn"} in ssn  # the IG's trailing dot removed by an override


def test_data_types_cx_and_xpn(m):
    cx = m.datatype("CX[Identifier]")
    assert [r.path for r in cx.field(1)] == [(Step("value"),)]
    assert [(r.path, r.dt, r.condition) for r in cx.field(4)] == [((Step("system"),), "HD[uri]", None)]
    assert [r.vocab for r in cx.field(5)] == ["identifiertype"]
    xpn = m.datatype("XPN[HumanName]")
    assert [r.path for r in xpn.field(1)] == [(Step("", 1), Step("family"))]
    assert [r.path for r in xpn.field(2)] == [(Step("", 1), Step("given", 1))]
    assert [r.vocab for r in xpn.field(7)] == ["nametype"]
    assert m.vocabulary("NameType").get("L").code == "official"


def test_pv1_class_status_and_visit_number(m):
    pv1_2 = fields(m, "PV1[Encounter]", 2)
    klass = first_path(pv1_2, (Step("class"),))
    assert [(r.dt, r.vocab) for r in klass] == [("CWE[Coding]", "patientclass[encounterclass]")]
    classes = m.vocabulary("PatientClass[EncounterClass]")
    assert (classes.get("E").code, classes.get("I").code, classes.get("O").code) == ("EMER", "IMP", "AMB")
    assert classes.get("O").display == "ambulatory"  # from column 7 (override): column 8 is empty
    assert classes.get("I").system == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    status, = first_path(pv1_2, (Step("status"),))
    assert status.condition == {"not": {"valued": {"ref": "PV1-45"}}}
    finished = [r for r in fields(m, "PV1[Encounter]", 45) if r.path == (Step("status"),)]
    assert [r.assign for r in finished] == [{"const": "finished"}]
    assert finished[0].when(lambda ref: ["20240316113000"] if ref == "PV1-45" else [])
    visit = fields(m, "PV1[Encounter]", 19)
    assert visit[0].path == (Step("identifier", 1),) and visit[0].dt == "CX[Identifier]"
    assert {"const": "VN"} in [r.assign for r in visit]
    assert m.vocabulary("Event[EncounterStatus]").get("A03").code == "finished"


def obx5(m: Maps, value_type: str, **components: str) -> list:
    """The OBX-5 rules whose condition holds for an OBX with this OBX-2 (and OBX-5 components)."""
    values = {"OBX-2": [value_type], "OBX-5": ["x"], **{f"OBX-5.{k[1:]}": [v] for k, v in components.items()}}
    return [r for r in fields(m, "OBX[Observation]", 5) if r.when(lambda ref: values.get(ref, []))]


def test_obx_value_by_value_type(m):
    assert [(r.path, r.dt) for r in obx5(m, "NM")] == [((Step("valueQuantity"), Step("value")), "NM[Quantity]")]
    for coded in ("CWE", "CE"):
        assert [(r.path, r.dt) for r in obx5(m, coded)] == [((Step("valueCodeableConcept"),), f"{coded}[CodeableConcept]")]
    for text in ("ST", "TX", "FT"):
        assert [r.path for r in obx5(m, text)] == [(Step("valueString"),)]
    assert [(r.path, r.dt) for r in obx5(m, "SN", c1="<", c3="")] == [((Step("valueQuantity", 1),), "SN[Quantity]")]
    assert [(r.path, r.dt) for r in obx5(m, "SN", c1="", c3="-")] == [((Step("valueRange", 1),), "SN[Range]")]
    assert [(r.path, r.dt) for r in obx5(m, "SN", c1="", c3=":")] == [((Step("valueRatio", 1),), "SN[Ratio]")]
    text, = obx5(m, "SN", c1="<>")
    assert text.path == (Step("valueString"),) and text.assign["concat"][-1] == {"ref": "OBX-6"}
    assert [r.path for r in obx5(m, "NA")] == [(Step("valueSampledData"),)]  # typo repaired by an override
    interpretation, = fields(m, "OBX[Observation]", 8)
    assert interpretation.path == (Step("interpretation"),) and interpretation.vocab == "interpretationcodes"
    flags = m.vocabulary("InterpretationCodes")
    assert flags.get("H").code == "H" and flags.get("<").code == "<"  # the NO-BREAK SPACE is stripped
    units = [r for r in fields(m, "OBX[Observation]", 6) if r.when(lambda ref: {"OBX-2": ["NM"]}.get(ref, []))]
    assert [(r.path, r.dt) for r in units] == [((Step("valueQuantity", 1),), "CWE[Quantity]")]
    assert [r.path for r in m.datatype("CWE[Quantity]").field(2)] == [(Step("unit"),)]


def test_rxa_vaccine_and_sch_appointment(m):
    vaccine, = fields(m, "RXA[Immunization]", 5)
    assert vaccine.path == (Step("vaccineCode"),) and vaccine.dt == "CWE[CodeableConcept]"
    sch = m.segment("SCH[Appointment]")
    assert sch.resource == "Appointment"
    assert [(r.path, r.dt) for r in sch.field(1)] == [((Step("identifier", 1),), "EI[Identifier-Extension]")]
    status, = sch.field(25)
    assert status.path == (Step("status"),) and status.vocab == "fillerstatuscodes[appointment]"
    assert m.vocabulary(status.vocab).get("Booked").code == "booked"
    siu = m.message("SIU_S12")
    assert any(r.map == "SCH[Appointment]" and r.target.type == "Appointment" for r in siu)


def test_message_links_and_overrides(m):
    oru = m.message("ORU_R01")
    obr = [r for r in oru if r.map == "OBR[DiagnosticReport]"]
    assert [(l.source.type, l.path, l.target.type) for l in obr[0].links] == [("DiagnosticReport", "subject", "Patient")]
    obx = [r for r in oru if r.path[-2:] == ("OBSERVATION", "OBX") and r.map and r.map.startswith("OBX")]
    assert obx[0].target.type == "Observation" and obx[0].target.n == 2
    lookup = {"OBX-5": ["95"], "OBX-2": ["NM"], "OBX-29": []}
    assert obx[0].when(lambda ref: lookup.get(ref, [])) and not obx[1].when(lambda ref: lookup.get(ref, []))
    # OBR-2 is an EI: the Specimen's accession identifier uses the EI map, as DiagnosticReport's identifier does
    assert [r.dt for r in fields(m, "OBR[Specimen]", 2)] == ["EI[Identifier-Extension]"]
    vxu = [r for r in m.message("VXU_V04") if r.map == "ORC[Immunization]"]
    assert vxu[0].links[0].source.type == "Immunization" and vxu[0].links[0].path == "patient"


def test_every_event_of_the_issue_is_routed(m):
    assert m.events() == sorted(ISSUE_EVENTS)
    for key in ISSUE_EVENTS:
        event = m.event(*key.split("^"))
        assert m.structure(event.tree)
        if event.map:
            assert m.message(event.map)
    assert m.event("ADT", "A04").map == m.event("ADT", "A08").map == m.event("ADT", "A13").map == "ADT_A01"
    assert (m.event("ADT", "A03").structure, m.event("ADT", "A03").map) == ("ADT_A03", "ADT_A01")
    assert m.event("ADT", "A11").map == "ADT_A11"
    assert (m.event("ADT", "A40").map, m.event("ADT", "A40").handler) == (None, "merge")
    assert m.event("SIU", "S13").map == "SIU_S12" and m.event("ORU", "R01").map == "ORU_R01"
    assert m.event("ADT", "A60") is None


def walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_every_condition_compiles_or_is_listed_as_skipped(m):
    for kind in ("messages", "segments", "datatypes"):
        raw = json.loads((DATA / f"{kind}.json").read_text())
        for node in walk(raw):
            if "when" in node and "src" in node:
                compile_condition(node["when"])(lambda ref: [])
    for name in m.names("messages"):
        m.message(name)
    for name in m.names("segments"):
        m.segment(name)
    for name in m.names("datatypes"):
        m.datatype(name)
    skipped = json.loads((DATA / "skipped.json").read_text())
    assert all(entry["src"] and entry["why"] for entry in skipped)
    unparsed = {e["text"] for e in skipped if e["why"].startswith("unparsed condition")}
    assert 'IF PL.8 VALUED AND PL.1 NOT VALUED AND PL.2 NOT VALUED AND PL3.NOT VALUED' in unparsed


def test_condition_semantics():
    values = {"PID-33": ["x"], "PID-34": [""], "OBX-5": ["1", "2"]}
    lookup = lambda ref: values.get(ref, [])  # noqa: E731
    assert not compile_condition({"and": [{"valued": {"ref": "PID-33"}}, {"valued": {"ref": "PID-34"}}]})(lookup)
    assert compile_condition({"count_gt": [{"ref": "OBX-5"}, 1]})(lookup)
    assert compile_condition({"not_in": [{"ref": "OBX-29"}, ["QST", "SCI"]]})(lookup)
    assert compile_condition({"ne": [{"ref": "PID-33"}, {"ref": "PID-34"}]})(lookup)
    parsed = generate.parse_condition('IF SN.3 OR SN.4 VALUED', "SN", "SN")
    assert parsed == {"or": [{"valued": {"ref": "SN.3"}}, {"valued": {"ref": "SN.4"}}]}
    assert generate.parse_condition("IF NOT VALUED", "PID-19") == {"not": {"valued": {"ref": "PID-19"}}}
    assert generate.parse_condition("IF HD.1 NOT VALUED AND IF HD-3 = \"ISO\"", "HD.2", "HD") == {
        "and": [{"not": {"valued": {"ref": "HD.1"}}}, {"eq": [{"ref": "HD.3"}, "ISO"]}]}
