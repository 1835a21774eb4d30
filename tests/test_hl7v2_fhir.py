"""What HL7 v2 messages become, read back over FHIR from a running Hearth after sending them over MLLP (both
backends): field by field against hand-written expectations, the identity rules (a patient by PID-3, an encounter
by PV1-19 within it, so repeated and out-of-order messages converge), the encounter's status across events, the
A40 merge, results, vaccinations and appointments."""

from __future__ import annotations

from typing import Any

from hl7v2_helpers import acks, edge, feed, sample  # noqa: F401  (feed is a fixture)

V2 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def adt(event: str, control_id: str, *, mrn: str = "L100", visit: str = "VL100", cls: str = "I",
        room: str = "W1^101^A", admit: str = "20240401080000-0500", discharge: str = "", disposition: str = "",
        address: str = "1 First St^^Springfield^IL^62701^USA^H", structure: str = "ADT_A01") -> bytes:
    pv1 = [""] * 46
    pv1[0:4] = ["PV1", "1", cls, room]
    pv1[19], pv1[36], pv1[44], pv1[45] = f"{visit}^^^HOSP^VN", disposition, admit, discharge
    segments = [
        f"MSH|^~\\&|ADTAPP|HOSP|HEARTH|HEARTHFAC|20240401080000||ADT^{event}^{structure}|{control_id}|P|2.5.1",
        f"EVN|{event}|20240401080000",
        f"PID|1||{mrn}^^^HOSP^MR||Lifecycle^Lee^^^^^L||19750505|F|||{address}",
        "|".join(pv1).rstrip("|")]
    return "\r".join(segments).encode() + b"\r"


def coding(concept: dict[str, Any]) -> tuple[str | None, str | None]:
    first = concept["coding"][0]
    return first.get("system"), first.get("code")


async def test_adt_a01_field_by_field(feed):
    await feed.start()
    [answer] = await feed.send(adt("A01", "L-1", discharge=""))
    assert acks(answer)[0]["msa1"] == "AA"
    await feed.converged()
    patient = await feed.one("Patient", identifier="HOSP|L100")
    assert patient["identifier"][0]["value"] == "L100"
    assert coding(patient["identifier"][0]["type"]) == (V2, "MR")
    assert patient["name"] == [{"family": "Lifecycle", "given": ["Lee"], "use": "official"}]
    assert (patient["gender"], patient["birthDate"]) == ("female", "1975-05-05")
    [address] = patient["address"]
    assert (address["line"], address["city"], address["state"], address["postalCode"], address["country"],
            address["use"]) == (["1 First St"], "Springfield", "IL", "62701", "USA", "home")
    assert patient["meta"]["source"] == "urn:hl7v2:adt:ADTAPP:HOSP:L-1"
    encounter = await feed.one("Encounter", identifier="HOSP|VL100")
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert encounter["status"] == "in-progress"
    assert coding({"coding": [encounter["class"]]}) == ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP")
    assert encounter["period"] == {"start": "2024-04-01T08:00:00-05:00"}
    [where] = encounter["location"]
    assert where["location"]["display"] == "W1/101/A"
    bed = await feed.client.get(f"/{where['location']['reference']}")
    assert bed.status_code == 200 and bed.json()["name"] == "A"


async def test_an_a08_before_its_a01_converges_on_one_encounter(feed):
    await feed.start()
    await feed.send(adt("A08", "O-1", cls="I"))
    await feed.send(adt("A01", "O-2", cls="I"))
    await feed.converged()
    [patient] = await feed.find("Patient")
    [encounter] = await feed.find("Encounter")
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert encounter["meta"]["source"].endswith(":O-2")


async def test_the_encounter_status_across_discharge_update_and_cancel_discharge(feed):
    await feed.start()
    await feed.send(adt("A01", "S-1"))
    await feed.send(adt("A03", "S-2", discharge="20240403113000-0500", disposition="01", structure="ADT_A03"))
    await feed.converged()
    encounter = await feed.one("Encounter", identifier="HOSP|VL100")
    assert encounter["status"] == "finished"
    assert encounter["period"] == {"start": "2024-04-01T08:00:00-05:00", "end": "2024-04-03T11:30:00-05:00"}
    assert coding(encounter["hospitalization"]["dischargeDisposition"]) == (
        "http://terminology.hl7.org/CodeSystem/v2-0112", "01")
    await feed.send(adt("A08", "S-3"))  # an update after the discharge does not reopen it
    await feed.converged()
    encounter = await feed.one("Encounter", identifier="HOSP|VL100")
    assert encounter["status"] == "finished" and encounter["period"]["end"] == "2024-04-03T11:30:00-05:00"
    await feed.send(adt("A13", "S-4"))  # cancel discharge
    await feed.converged()
    encounter = await feed.one("Encounter", identifier="HOSP|VL100")
    assert encounter["status"] == "in-progress" and "end" not in encounter["period"]
    assert encounter["meta"]["versionId"] == "4"


async def test_a11_cancels_the_admission_and_a02_moves_the_patient(feed):
    await feed.start()
    await feed.send(adt("A01", "C-1", mrn="C100", visit="VC100"))
    await feed.send(adt("A02", "C-2", mrn="C100", visit="VC100", room="W2^205^B", structure="ADT_A02"))
    await feed.converged()
    moved = await feed.one("Encounter", identifier="HOSP|VC100")
    assert [where["location"]["display"] for where in moved["location"]] == ["W2/205/B"]
    await feed.send(adt("A11", "C-3", mrn="C100", visit="VC100", structure="ADT_A09"))
    await feed.converged()
    assert (await feed.one("Encounter", identifier="HOSP|VC100"))["status"] == "cancelled"


async def test_a_result_for_a_registered_patient_lands_on_it_and_leaves_its_demographics(feed):
    await feed.start()
    await feed.send(adt("A01", "R-1", mrn="EC1300", visit="V-EC1300", address="9 Ninth St^^Chicago^IL^60601^USA^H")
                    .replace(b"^^^HOSP^", b"^^^EDGEFAC^"))
    await feed.send(edge("oru-r01-obx-value-types.hl7"))
    await feed.converged()
    [patient] = await feed.find("Patient")
    assert patient["address"][0]["city"] == "Chicago"  # the lab's PID has no address: nothing is lost
    assert patient["name"][0]["family"] == "Lifecycle" and patient["meta"]["versionId"] == "1"
    [encounter] = await feed.find("Encounter")
    [report] = await feed.find("DiagnosticReport")
    assert report["subject"]["reference"] == f"Patient/{patient['id']}"
    observations = await feed.find("Observation")
    assert len(observations) == 7
    assert {o["encounter"]["reference"] for o in observations} == {f"Encounter/{encounter['id']}"}


async def test_oru_r01_value_types_field_by_field(feed):
    await feed.start()
    await feed.send(edge("oru-r01-obx-value-types.hl7"))
    await feed.converged()
    report = await feed.one("DiagnosticReport")
    assert report["status"] == "final" and coding(report["code"])[1] == "EC-PANEL"
    by_code = {}
    for reference in report["result"]:
        observation = (await feed.client.get(f"/{reference['reference']}")).json()
        by_code[coding(observation["code"])[1]] = observation
    assert list(by_code) == ["2345-7", "8251-1", "600-7", "48767-8", "2160-0", "EC-EPI", "EC-TITER"]
    assert {o["status"] for o in by_code.values()} == {"final"}
    glucose = by_code["2345-7"]
    assert glucose["valueQuantity"] == {"value": 95, "unit": "mg/dL", "system": "http://unitsofmeasure.org",
                                        "code": "mg/dL"}
    assert (glucose["referenceRange"][0]["low"]["value"], glucose["referenceRange"][0]["high"]["value"]) == (70, 99)
    assert coding(glucose["interpretation"][0])[1] == "N"
    assert glucose["effectiveDateTime"].startswith("2024-03-15T07:00:00")
    assert by_code["8251-1"]["valueString"] == "Specimen slightly hemolyzed"
    assert coding(by_code["600-7"]["valueCodeableConcept"]) == ("http://snomed.info/sct", "3092008")
    assert coding(by_code["600-7"]["interpretation"][0])[1] == "A"
    assert by_code["48767-8"]["valueString"] == "Result verified by repeat analysis."
    creatinine = by_code["2160-0"]["valueQuantity"]
    assert (creatinine["comparator"], creatinine["value"], creatinine["unit"]) == ("<", 0.5, "mg/dL")
    assert coding(by_code["2160-0"]["interpretation"][0])[1] == "L"
    epithelial = by_code["EC-EPI"]["valueRange"]
    assert (epithelial["low"]["value"], epithelial["high"]["value"]) == (5, 10)
    titer = by_code["EC-TITER"]["valueRatio"]
    assert (titer["numerator"]["value"], titer["denominator"]["value"]) == (1, 128)


async def test_a_corrected_result_updates_the_same_observations(feed):
    await feed.start()
    original = edge("oru-r01-obx-value-types.hl7")
    await feed.send(original)
    await feed.converged()
    before = {o["id"] for o in await feed.find("Observation")}
    corrected = original.replace(b"|EC-13|", b"|EC-13C|").replace(b"||95|mg/dL", b"||96|mg/dL")
    await feed.send(corrected.replace(b"|N|||F|||20240315070000", b"|N|||C|||20240315070000"))
    await feed.converged()
    after = await feed.find("Observation")
    assert {o["id"] for o in after} == before
    glucose = next(o for o in after if coding(o["code"])[1] == "2345-7")
    assert (glucose["status"], glucose["valueQuantity"]["value"], glucose["meta"]["versionId"]) == ("corrected", 96, "2")
    untouched = next(o for o in after if coding(o["code"])[1] == "8251-1")
    assert untouched["meta"]["versionId"] == "2"  # meta.source names the new message: a new version all the same


async def test_a40_merge_after_the_batch(feed):
    await feed.start()
    [batch] = await feed.send(edge("batch-fhs-bhs-three-messages.hl7"))
    assert [a["msa1"] for a in acks(batch)] == ["AA", "AA", "AA"]
    await feed.converged()
    terry = await feed.one("Patient", identifier="EDGEFAC|EC1101")
    twin = await feed.one("Patient", identifier="EDGEFAC|EC1102")
    glucose = await feed.one("Observation", subject=f"Patient/{twin['id']}")
    assert glucose["valueQuantity"]["value"] == 101 and coding(glucose["interpretation"][0])[1] == "H"
    twin_encounter = await feed.one("Encounter", identifier="EDGEFAC|V-EC1102")
    [answer] = await feed.send(edge("adt-a40-merge.hl7"))
    assert acks(answer) == [{"msa1": "AA", "msa2": "EC-12"}]
    merged = (await feed.client.get(f"/Patient/{twin['id']}")).json()
    survivor = (await feed.client.get(f"/Patient/{terry['id']}")).json()
    assert merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{terry['id']}"}, "type": "replaced-by"}]
    assert survivor["link"] == [{"other": {"reference": f"Patient/{twin['id']}"}, "type": "replaces"}]
    assert {i["value"] for i in survivor["identifier"]} == {"EC1101", "EC1102"}
    assert len(await feed.find("Patient")) == 2
    # what was recorded about the merged patient still says so
    assert (await feed.one("Encounter", identifier="EDGEFAC|V-EC1102"))["subject"] == twin_encounter["subject"]
    assert (await feed.one("Observation"))["subject"]["reference"] == f"Patient/{twin['id']}"
    # a later message naming the merged patient's identifier lands on the survivor
    later = adt("A08", "EC-12-later", mrn="EC1102", visit="V-EC9999").replace(b"^^^HOSP^", b"^^^EDGEFAC^")
    await feed.send(later)
    await feed.converged()
    assert (await feed.one("Encounter", identifier="EDGEFAC|V-EC9999"))["subject"]["reference"] == \
        f"Patient/{terry['id']}"
    version = (await feed.client.get(f"/Patient/{terry['id']}")).json()["meta"]["versionId"]
    again = await feed.send(edge("adt-a40-merge.hl7").replace(b"|EC-12|", b"|EC-12-again|"))
    assert acks(again[0])[0]["msa1"] == "AA", again
    await feed.converged()
    assert (await feed.client.get(f"/Patient/{terry['id']}")).json()["meta"]["versionId"] == version
    assert (await feed.client.get(f"/Patient/{twin['id']}")).json()["meta"]["versionId"] == \
        merged["meta"]["versionId"]  # a merge done already changes nothing


async def test_charset_and_escapes_arrive_as_unicode_and_search(feed):
    await feed.start()
    await feed.send(edge("charset-iso-8859-1-msh18.hl7"), edge("escape-sequences.hl7"),
                    edge("delimiters-custom-legal.hl7"))
    await feed.converged()
    muller = await feed.one("Patient", family="Müller")
    assert muller["name"][0]["given"] == ["Jörg"] and muller["address"][0]["city"] == "Köln"
    assert muller["address"][0]["line"] == ["Straße 5"]
    escaped = await feed.one("Patient", identifier="EDGEFAC|EC0500")
    assert escaped["name"][0]["family"] == "Bar|Foo" and escaped["name"][0]["given"] == ["Caret^Given"]
    assert escaped["address"][0]["line"] == ["12 Main St & 3rd Ave", "Apt 1~2"]
    assert escaped["address"][0]["city"] == "Back\\slash"
    custom = await feed.one("Patient", identifier="EDGEFAC|EC0200")
    assert custom["address"][0]["line"][0] == "Bldg 4 | Door ^B"
    assert sorted((t["use"], t["value"]) for t in custom["telecom"]) == [("home", "+1 217 5550201"),
                                                                        ("mobile", "+1 217 5550202")]


async def test_vxu_v04_makes_an_immunization(feed):
    await feed.start()
    await feed.send(sample("VXU-V04-01.hl7", control_id="VXU-1"))
    await feed.converged()
    assert await feed.dead_letters() == []
    immunization = await feed.one("Immunization")
    patient = await feed.one("Patient", identifier="test1|PATID1234")
    assert immunization["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert immunization["status"] == "completed"
    assert coding(immunization["vaccineCode"]) == ("http://hl7.org/fhir/sid/ndc", "49281021588")
    assert immunization["occurrenceDateTime"].startswith("2021-08-18")
    assert immunization["lotNumber"] == "315841"
    assert immunization["doseQuantity"]["value"] == 0.5


async def test_siu_booked_rescheduled_cancelled_is_one_appointment(feed):
    await feed.start()
    await feed.send(sample("SIU-S12-01.hl7", control_id="SIU-12"))
    await feed.converged()
    booked = await feed.one("Appointment")
    assert booked["status"] == "booked"
    patient = await feed.one("Patient", identifier="test1|PATID1234")
    actors = [p["actor"]["reference"] for p in booked["participant"] if "actor" in p]
    assert f"Patient/{patient['id']}" in actors
    assert all(p["status"] in ("accepted", "declined", "tentative", "needs-action") for p in booked["participant"])
    await feed.send(sample("SIU-S14-01.hl7", control_id="SIU-14"))
    await feed.send(sample("SIU-S15-01.hl7", control_id="SIU-15"))
    await feed.converged()
    cancelled = await feed.one("Appointment")
    assert cancelled["id"] == booked["id"] and cancelled["status"] == "cancelled"
    assert await feed.dead_letters() == []


async def test_a05_preadmits_and_a06_turns_an_outpatient_visit_inpatient(feed):
    await feed.start()
    await feed.send(adt("A05", "P-1", mrn="P100", visit="VP100", cls="P", structure="ADT_A05"))
    await feed.converged()
    planned = await feed.one("Encounter", identifier="HOSP|VP100")
    assert (planned["status"], planned["class"]["code"]) == ("planned", "PRENC")
    assert planned["location"][0]["status"] == "planned"
    await feed.send(adt("A04", "P-2", mrn="P200", visit="VP200", cls="O"))
    await feed.send(adt("A06", "P-3", mrn="P200", visit="VP200", cls="I", structure="ADT_A06"))
    await feed.converged()
    changed = await feed.one("Encounter", identifier="HOSP|VP200")
    assert (changed["status"], changed["class"]["code"], changed["meta"]["versionId"]) == ("in-progress", "IMP", "2")
