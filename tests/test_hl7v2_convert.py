"""The HL7 v2 -> FHIR R4 engine (connectors/hl7v2/convert.py), as pure function calls: the edge cases' expected
resources field by field, samples of each supported message type, ids, and Hearth's validator on everything made.
The test data is read at test time only (../shared/testdata/hl7v2)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hearth.capability.validation import validate_resource
from hearth.connectors.hl7v2 import frame
from hearth.connectors.hl7v2.convert import Conversion, ConversionError, convert, merge_pairs
from hearth.connectors.hl7v2.dtm import InvalidTime, to_fhir
from hearth.connectors.hl7v2.maps import maps
from hearth.connectors.hl7v2.parse import split_fields, split_fields_hl7
from hearth.connectors.hl7v2.systems import coding_system, identifier_system

DATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "hl7v2"
EDGE = DATA / "edge-cases"
CHICAGO = ZoneInfo("America/Chicago")
LOINC, UCUM, SCT = "http://loinc.org", "http://unitsofmeasure.org", "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def messages(path: Path) -> tuple[list[str], str]:
    """The messages of a file (a batch gives several), decoded as the receiver does, and their codec."""
    decoded = frame.decode(frame.normalise(path.read_bytes()))
    assert isinstance(decoded, tuple), decoded
    text, charset = decoded
    return list(frame.split_batch(text).messages), charset


def run(path: Path, index: int = 0, **options) -> Conversion:
    texts, charset = messages(path)
    return convert(texts[index], charset, connector="feed", timezone=CHICAGO, **options)


def of_type(conversion: Conversion, kind: str) -> list[dict]:
    return [r for r in conversion.resources if r["resourceType"] == kind]


def one(conversion: Conversion, kind: str) -> dict:
    found = of_type(conversion, kind)
    assert len(found) == 1, [r["resourceType"] for r in conversion.resources]
    return found[0]


def resolve(conversion: Conversion, reference: str) -> dict:
    kind, rid = reference.split("/")
    return next(r for r in conversion.resources if r["resourceType"] == kind and r["id"] == rid)


def observation(conversion: Conversion, code: str) -> dict:
    return next(r for r in of_type(conversion, "Observation") if r["code"]["coding"][0]["code"] == code)


# ---------------------------------------------------------------------------------------------- edge cases


def test_custom_delimiters():
    c = run(EDGE / "delimiters-custom-legal.hl7")
    patient = one(c, "Patient")
    assert patient["name"][0]["family"] == "CUSTOM"
    assert patient["name"][0]["given"] == ["DELIA", "Q"]
    assert patient["address"][0]["line"][0] == "Bldg 4 | Door ^B"
    assert patient["address"][0]["city"] == "Springfield"
    assert [(t["system"], t["use"], t["value"]) for t in patient["telecom"]] == [
        ("phone", "home", "+1 217 5550201"), ("phone", "mobile", "+1 217 5550202")]
    encounter = one(c, "Encounter")
    assert encounter["class"]["code"] == "AMB"
    assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def test_escape_sequences():
    c = run(EDGE / "escape-sequences.hl7")
    patient = one(c, "Patient")
    assert patient["name"][0]["family"] == "Bar|Foo"
    assert patient["name"][0]["given"] == ["Caret^Given"]
    assert patient["address"][0]["line"] == ["12 Main St & 3rd Ave", "Apt 1~2"]
    assert patient["address"][0]["city"] == "Back\\slash"
    assert observation(c, "8251-1")["valueString"] == "Line one\nLine two"
    assert observation(c, "48767-8")["valueString"] == "First line\nSecond line"
    dumped = json.dumps(c.resources)
    for sequence in ("\\\\F\\\\", "\\\\S\\\\", "\\\\T\\\\", "\\\\R\\\\", "\\\\E\\\\", "\\\\X0D", ".br"):
        assert sequence not in dumped


def test_repetitions():
    patient = one(run(EDGE / "repetitions-pid.hl7"), "Patient")
    assert [(i["type"]["coding"][0]["code"], i["value"]) for i in patient["identifier"]] == [
        ("MR", "EC0600"), ("SS", "999-06-0600"), ("DL", "D0600600")]
    assert patient["identifier"][0]["system"] == "EDGEFAC"
    assert [n["use"] for n in patient["name"]] == ["official", "nickname", "maiden"]
    assert [n["given"][0] for n in patient["name"]] == ["ROBERTA", "BOBBIE", "ROBERTA"]
    assert [(a.get("use"), a.get("type"), a["line"][0]) for a in patient["address"]] == [
        ("home", None, "6 Loop Ln"), (None, "postal", "PO Box 6")]
    assert [(t["system"], t.get("use"), t["value"]) for t in patient["telecom"]] == [
        ("phone", "home", "+1 217 5550601"), ("email", None, "roberta@example.org"),
        ("phone", "mobile", "+1 217 5550602")]


def test_z_segments_dropped_or_kept():
    c = run(EDGE / "z-segments.hl7")
    encounter = one(c, "Encounter")
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"
    assert encounter["location"][0]["location"]["display"] == "W3/301/A"
    assert encounter["period"] == {"start": "2024-03-15T09:00:00-05:00"}
    bed = resolve(c, encounter["location"][0]["location"]["reference"])
    room = resolve(c, bed["partOf"]["reference"])
    point = resolve(c, room["partOf"]["reference"])
    facility = resolve(c, point["partOf"]["reference"])
    assert [bed["name"], room["name"], point["name"], facility["name"]] == ["A", "301", "W3", "EDGEFAC"]
    assert "partOf" not in facility
    assert "extension" not in one(c, "Patient")
    kept = one(run(EDGE / "z-segments.hl7", z_segments="keep"), "Patient")["extension"]
    assert [e["valueString"] for e in kept] == ["ZPI|1|VIP^Very important person^L|she/her",
                                               "ZVI|1|Custom visit data", "ZZZ|trailing site-specific segment"]
    assert {e["url"] for e in kept} == {"urn:hearth:hl7v2:z-segment"}


def test_charset_latin1():
    texts, charset = messages(EDGE / "charset-iso-8859-1-msh18.hl7")
    assert charset == "iso8859-1"
    c = convert(texts[0], charset, connector="feed")
    patient = one(c, "Patient")
    assert patient["name"][0]["family"] == "Müller"
    assert patient["name"][0]["given"] == ["Jörg"]
    address = patient["address"][0]
    assert (address["line"], address["city"], address["postalCode"], address["country"]) == (
        ["Straße 5"], "Köln", "50667", "DEU")
    related = one(c, "RelatedPerson")
    assert (related["name"][0]["family"], related["name"][0]["given"]) == ("Lefèvre", ["Françoise"])
    assert related["patient"]["reference"] == c.patient


def test_batch_each_message():
    texts, charset = messages(EDGE / "batch-fhs-bhs-three-messages.hl7")
    assert len(texts) == 3
    first, second, result = (convert(t, charset, connector="feed", timezone=CHICAGO) for t in texts)
    assert first.patient_identifiers[0]["value"] == "EC1101"
    assert second.patient_identifiers[0]["value"] == "EC1102"
    assert result.patient == second.patient  # the same identifier gives the same id
    report = one(result, "DiagnosticReport")
    assert (report["code"]["coding"][0]["code"], report["status"]) == ("2345-7", "final")
    glucose = one(result, "Observation")
    assert glucose["valueQuantity"] == {"value": 101, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    assert glucose["interpretation"][0]["coding"][0]["code"] == "H"
    assert glucose["referenceRange"][0]["low"]["value"] == 70
    assert glucose["referenceRange"][0]["high"]["value"] == 99
    assert report["result"] == [{"reference": f"Observation/{glucose['id']}"}]


def test_merge_pairs():
    texts, charset = messages(EDGE / "adt-a40-merge.hl7")
    pairs = merge_pairs(texts[0], charset, connector="feed")
    assert [([i["value"] for i in s], [i["value"] for i in m]) for s, m in pairs] == [(["EC1101"], ["EC1102"])]
    assert pairs[0][1][0]["system"] == "EDGEFAC"
    with pytest.raises(ConversionError):
        convert(texts[0], charset, connector="feed")
    two = merge_pairs(*_one(DATA / "ADT-A40-02.hl7"), connector="feed")
    assert len(two) == 2


def _one(path: Path) -> tuple[str, str]:
    texts, charset = messages(path)
    return texts[0], charset


def test_oru_value_types():
    c = run(EDGE / "oru-r01-obx-value-types.hl7")
    report = one(c, "DiagnosticReport")
    assert report["code"]["coding"][0]["code"] == "EC-PANEL"
    assert report["status"] == "final"
    assert report["subject"]["reference"] == c.patient
    results = [resolve(c, r["reference"]) for r in report["result"]]
    assert len(results) == 7
    assert {r["status"] for r in results} == {"final"}
    nm, st, ce, tx, lt, rng, ratio = results
    assert nm["valueQuantity"] == {"value": 95, "unit": "mg/dL", "system": UCUM, "code": "mg/dL"}
    assert nm["referenceRange"][0]["text"] == "70-99"
    assert (nm["referenceRange"][0]["low"]["value"], nm["referenceRange"][0]["high"]["value"]) == (70, 99)
    assert nm["interpretation"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N",
        "display": "Normal"}
    assert nm["code"]["coding"][0]["system"] == LOINC
    assert st["valueString"] == "Specimen slightly hemolyzed"
    assert ce["valueCodeableConcept"]["coding"][0] == {"code": "3092008", "display": "Staphylococcus aureus",
                                                       "system": SCT}
    assert ce["interpretation"][0]["coding"][0]["code"] == "A"
    assert tx["valueString"] == "Result verified by repeat analysis."
    assert lt["valueQuantity"] == {"comparator": "<", "value": 0.5, "unit": "mg/dL", "system": UCUM,
                                   "code": "mg/dL"}
    assert lt["interpretation"][0]["coding"][0]["code"] == "L"
    assert rng["valueRange"]["low"]["value"] == 5 and rng["valueRange"]["high"]["value"] == 10
    assert rng["valueRange"]["low"]["system"] == UCUM
    assert ratio["valueRatio"]["numerator"] == {"value": 1}
    assert ratio["valueRatio"]["denominator"] == {"value": 128}
    assert nm["effectiveDateTime"] == "2024-03-15T07:00:00-05:00"  # no offset: the connector's zone


def test_a08_unknown_patient():
    c = run(EDGE / "adt-a08-unknown-patient.hl7")
    assert c.event == "ADT^A08"
    assert one(c, "Patient")["identifier"][0]["value"] == "EC1400"
    encounter = one(c, "Encounter")
    assert encounter["status"] == "in-progress"  # IG: PV1-2 O; Hearth's write path keeps a finished one
    assert c.encounter == f"Encounter/{encounter['id']}"
    assert c.encounter_identifier["value"] == "V-EC1400"
    assert c.encounter_identifier["type"]["coding"][0]["code"] == "VN"


def test_a03_discharge():
    c = run(EDGE / "adt-a03-discharge.hl7")
    encounter = one(c, "Encounter")
    assert encounter["status"] == "finished"
    assert encounter["period"] == {"start": "2024-03-15T09:00:00-05:00", "end": "2024-03-16T11:30:00-05:00"}
    assert encounter["hospitalization"]["dischargeDisposition"]["coding"][0] == {
        "code": "01", "system": "http://terminology.hl7.org/CodeSystem/v2-0112"}
    admitted = run(EDGE / "z-segments.hl7")
    assert c.encounter == admitted.encounter  # the same PV1-19: the same Encounter
    assert c.patient == admitted.patient


def test_encounter_status_by_event():
    text, charset = _one(EDGE / "z-segments.hl7")
    for event, status in (("A11", "cancelled"), ("A13", "in-progress"), ("A08", "in-progress")):
        changed = text.replace("ADT^A01^ADT_A01", f"ADT^{event}^ADT_A01").replace("EVN|A01", f"EVN|{event}")
        if event == "A13":
            changed = changed.replace("20240315090000-0500", "20240315090000-0500|20240316090000-0500")
        encounter = one(convert(changed, charset, connector="feed"), "Encounter")
        assert encounter["status"] == status, event
        if event == "A13":
            assert "end" not in encounter["period"]


# ---------------------------------------------------------------------------------------------- samples


def test_adt_a01_sample():
    c = run(DATA / "ADT-A01-01.hl7")
    assert c.event == "ADT^A01"
    assert c.source == "urn:hl7v2:feed:ADTApp:GHHSFacility:MSG00001"
    assert [(i["value"], i["system"], i["type"]["coding"][0]["code"]) for i in c.patient_identifiers] == [
        ("PATID1234", "test1", "MR"), ("123456789", "USSSA", "SS")]
    patient = one(c, "Patient")
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1988-08-18"
    assert patient["name"][0] == {"family": "EVERYMAN", "given": ["ADAM", "A"], "suffix": ["III", "MD", "PF"],
                                  "prefix": ["Dr."], "use": "usual"}
    assert patient["name"][1] == {"given": ["Addsm"], "use": "nickname"}
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    assert patient["deceasedDateTime"] == "2008-08-25T11:16:30+01:15"
    assert patient["multipleBirthInteger"] == 2
    encounter = one(c, "Encounter")
    assert encounter["class"]["code"] == "PRENC"
    assert encounter["status"] == "planned"
    assert encounter["period"] == {"start": "2015-02-08T11:34:19+01:10"}
    assert encounter["subject"]["reference"] == c.patient
    assert encounter["identifier"][0]["value"] == "40007716"
    assert c.encounter_identifier["value"] == "40007716"
    attender = resolve(c, encounter["participant"][0]["individual"]["reference"])
    assert attender["name"][0]["family"] == "Alaz"
    assert encounter["participant"][0]["type"][0]["coding"][0]["code"] == "ATND"
    assert encounter["location"][0]["location"]["display"] == "HUH AE OMU/OMU B/Bed 03"


def test_oru_sample_two_reports():
    c = run(DATA / "LAB-ORU-1.hl7")
    reports = of_type(c, "DiagnosticReport")
    assert [r["code"]["coding"][0]["code"] for r in reports] == ["24317-0", "26464-8"]
    assert [len(r["result"]) for r in reports] == [5, 5]
    first = [resolve(c, r["reference"]) for r in reports[0]["result"]]
    assert [o["status"] for o in first] == ["registered", "preliminary", "registered", "preliminary", "final"]
    assert first[1]["valueQuantity"]["value"] == Decimal("4.06")  # exact, as stored JSON is read
    assert c.encounter is None  # no PV1


def test_vxu_sample():
    c = run(DATA / "VXU-V04-01.hl7")
    immunization = one(c, "Immunization")
    assert immunization["status"] == "completed"
    assert immunization["vaccineCode"]["coding"][0] == {"code": "49281021588", "display": "TENIVAC",
                                                        "system": "http://hl7.org/fhir/sid/ndc"}
    assert immunization["occurrenceDateTime"] == "2021-08-18"
    assert immunization["lotNumber"] == "315841"
    assert immunization["patient"]["reference"] == c.patient


def test_siu_samples():
    booked = run(DATA / "SIU-S12-01.hl7")
    appointment = one(booked, "Appointment")
    assert appointment["status"] == "booked"
    assert appointment["start"] == "2020-10-01T11:26:00+02:15"
    assert appointment["end"] == "2020-10-09T11:26:00+02:15"
    assert [(p["actor"]["reference"].split("/")[0], p["status"]) for p in appointment["participant"]] == [
        ("Patient", "accepted"), ("Practitioner", "accepted"), ("Location", "accepted")]
    assert appointment["participant"][0]["actor"]["reference"] == booked.patient
    cancelled = one(run(DATA / "SIU-S15-01.hl7"), "Appointment")
    assert cancelled["id"] == appointment["id"]
    assert cancelled["status"] == "cancelled"
    assert [p["status"] for p in cancelled["participant"]] == ["accepted", "declined", "declined"]


# ---------------------------------------------------------------------------------------------- ids, options


def test_ids_are_deterministic():
    a, b = run(DATA / "LAB-ORU-1.hl7"), run(DATA / "LAB-ORU-1.hl7")
    assert [r["id"] for r in a.resources] == [r["id"] for r in b.resources]
    assert a.resources == b.resources


def test_a08_and_a01_share_the_encounter():
    text, charset = _one(EDGE / "z-segments.hl7")
    a08 = text.replace("ADT^A01^ADT_A01|EC-07", "ADT^A08^ADT_A01|EC-99")
    first, update = (convert(t, charset, connector="feed") for t in (text, a08))
    assert first.encounter == update.encounter
    assert first.patient == update.patient
    assert one(update, "Encounter")["meta"]["source"].endswith(":EC-99")


def test_types_restrict_what_is_made():
    c = run(EDGE / "z-segments.hl7", types=frozenset({"Patient", "Encounter"}))
    assert sorted(r["resourceType"] for r in c.resources) == ["Encounter", "Patient"]
    encounter = one(c, "Encounter")
    assert "location" not in encounter and "participant" not in encounter
    assert run(EDGE / "z-segments.hl7", types=frozenset({"Patient"})).encounter is None


def test_identifier_systems_setting():
    c = run(EDGE / "z-segments.hl7", identifier_systems={"EDGEFAC": "urn:oid:1.2.3.4"})
    assert c.patient_identifiers[0]["system"] == "urn:oid:1.2.3.4"
    assert c.encounter_identifier["system"] == "urn:oid:1.2.3.4"
    assert c.patient != run(EDGE / "z-segments.hl7").patient


def test_invalid_date_names_the_field():
    text, charset = _one(EDGE / "z-segments.hl7")
    with pytest.raises(ConversionError) as error:
        convert(text.replace("19900707", "19901399"), charset, connector="feed")
    assert error.value.location == ("PID", "1", "7")
    assert "PID-7" in str(error.value)


def test_dtm_and_systems():
    assert to_fhir("2024", "dateTime", CHICAGO) == "2024"
    assert to_fhir("202403", "dateTime", CHICAGO) == "2024-03"
    assert to_fhir("2024031509", "dateTime", CHICAGO) == "2024-03-15T09:00:00-05:00"
    assert to_fhir("20240715090000", "dateTime", CHICAGO) == "2024-07-15T09:00:00-05:00"
    assert to_fhir("20240315090000.25+0100", "instant", CHICAGO) == "2024-03-15T09:00:00.25+01:00"
    assert to_fhir("20240315091300", "date", CHICAGO) == "2024-03-15"
    assert to_fhir("0930", "time", CHICAGO) == "09:30:00"
    with pytest.raises(InvalidTime):
        to_fhir("2024-03-15", "dateTime", CHICAGO)
    assert coding_system("LN") == LOINC and coding_system("SCT") == SCT and coding_system("HL70112").endswith("0112")
    assert coding_system("L") is None and coding_system("99ZZZ") is None
    assert identifier_system("", "1.2.3", "ISO", {}) == "urn:oid:1.2.3"
    assert identifier_system("X", "", "", {"X": "https://x.example"}) == "https://x.example"


# ---------------------------------------------------------------------------------------------- defects


ORU_N = "\r".join([
    "MSH|^~\\&|LAB|LABFAC|HEARTH|HEARTHFAC|20240315091300||ORU^R01^ORU_R01|DEF-1|P|2.5.1",
    "PID|1||D100^^^LABFAC^MR||DEFECT^DORA||19700313|F|||||||||||123-45-6789",
    "OBR|1|ORD-D1^HEARTHTEST|FIL-D1^EDGELAB|EC-PANEL^Edge case panel^L|||20240315070000",
    "OBX|1|NM|2345-7^Glucose [Mass/volume] in Serum or Plasma^LN||95|mg/dL^mg/dL^UCUM|70-99|N|||N",
    "OBX|2|NM|2160-0^Creatinine [Mass/volume] in Serum or Plasma^LN||0.9|mg/dL^mg/dL^UCUM|0.6-1.2|N|||F"])


def test_ssn_system_has_no_trailing_dot():
    patient = one(convert(ORU_N, "utf-8", connector="feed"), "Patient")
    ssn, = [i for i in patient["identifier"] if i["value"] == "123-45-6789"]
    assert ssn["system"] == "http://hl7.org/fhir/sid/us-ssn"
    assert ssn["type"]["coding"][0]["code"] == "SS"


def test_specimen_from_obr_has_no_check_digit():
    specimen = one(convert(ORU_N, "utf-8", connector="feed"), "Specimen")
    assert specimen["accessionIdentifier"] == {"value": "ORD-D1"}  # OBR-2 is an EI: EI.2 is no check digit


def test_obx_11_not_asked():
    c = convert(ORU_N, "utf-8", connector="feed")
    absent, given = observation(c, "2345-7"), observation(c, "2160-0")
    assert absent["status"] == "final"
    assert absent["dataAbsentReason"] == {"coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-asked"}]}
    assert not [name for name in absent if name.startswith("value")]
    assert given["valueQuantity"]["value"] == Decimal("0.9") and "dataAbsentReason" not in given
    validate_resource(absent)


# ---------------------------------------------------------------------------------------------- parsing


def test_split_parser_agrees_with_the_hl7_package():
    odd = ["MSH|^~\\&|A\rPID|1||\"\"||A^B&C~D\rZZZ\rNTE", "MSH|^~\\|A|B\rPID|1|a&b^c~d\\F\\",
           "MSH|^~\\&|A|\r\rPID|1|  \r", "MSH|^~\\&|A\rPID^X|1|^^|&&|~~|"]
    samples = [(text, "utf-8") for text in odd]
    for path in sorted([*DATA.glob("*.hl7"), *EDGE.glob("*.hl7")]):
        decoded = frame.decode(frame.normalise(path.read_bytes()))
        if isinstance(decoded, tuple):
            samples += [(text, decoded[1]) for text in frame.split_batch(decoded[0]).messages]
    assert len(samples) > 150
    for text, charset in samples:
        delimiters = frame.read_delimiters(text.split("\r", 1)[0])
        fast = split_fields(text, delimiters, charset)
        assert fast is not None and fast == split_fields_hl7(text, delimiters, charset), text[:60]
    # what only the hl7 package reads right is left to it
    delimiters = frame.read_delimiters("MSH|^~\\&|A")
    assert split_fields("MSH|^~\\&|A\rMSH|^~\\&|B", delimiters, "utf-8") is None
    assert split_fields("MSH|^~\\&\rPID|1", delimiters, "utf-8") is None


# ---------------------------------------------------------------------------------------------- validity


def supported() -> list[tuple[str, int]]:
    found = []
    for path in sorted([*DATA.glob("*.hl7"), *EDGE.glob("*.hl7")]):
        decoded = frame.decode(frame.normalise(path.read_bytes()))
        if not isinstance(decoded, tuple):
            continue
        for index, text in enumerate(frame.split_batch(decoded[0]).messages):
            header = frame.parse_header(text, decoded[1])
            event = isinstance(header, frame.Header) and maps().event(header.message_type, header.trigger_event)
            if event and event.map and (path.parent != EDGE or "truncated" not in path.name):
                found.append((str(path.relative_to(DATA)), index))
    return found


SUPPORTED = supported()


def test_the_sweep_covers_every_supported_family():
    families = {name.split("/")[-1][:3] for name, _ in SUPPORTED}
    assert {"ADT", "LAB", "ORU", "SIU", "VXU", "IZ_"} <= families
    assert len(SUPPORTED) >= 50


@pytest.mark.parametrize("name,index", SUPPORTED)
def test_every_resource_is_valid_r4(name: str, index: int):
    c = run(DATA / name, index)
    assert c.resources
    ids = set()
    for resource in c.resources:
        validate_resource(resource)
        assert resource["meta"]["source"] == c.source
        ids.add((resource["resourceType"], resource["id"]))
    assert len(ids) == len(c.resources)
    for reference in _references(c.resources):
        kind, rid = reference.split("/")
        assert (kind, rid) in ids, reference  # references only point inside the message's resources


def _references(node) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for key, value in node.items() if key != "reference" for r in _references(value)]
    return []


@pytest.mark.parametrize("name", ["edge-cases/oru-r01-obx-value-types.hl7", "ADT-A01-01.hl7", "VXU-V04-01.hl7"])
def test_fhir_resources_agrees(name: str):
    for resource in run(DATA / name).resources:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
