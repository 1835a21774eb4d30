"""Required bindings: a code, Coding or CodeableConcept bound `required` in R4 must come from its ValueSet, on every
write path (POST, PUT, PATCH, batch and transaction entries, `hearth import`), both backends."""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class

from hearth.capability.bindings import bound_concept, checked_by, required_bindings
from hearth.capability.generate_bindings import required_bindings as generated_bindings
from hearth.capability.outcome import FhirError
from hearth.capability.terminology import Terminology
from hearth.capability.validation import validate_resource
from conftest import FHIR_JSON, SHARED, make_store
from hearth.interactions import crud
from hearth.interactions.context import Context
from hearth.server.load import Loader, find_files

OBSERVATION_STATUS = "http://hl7.org/fhir/ValueSet/observation-status"
CONDITION_CLINICAL = "http://hl7.org/fhir/ValueSet/condition-clinical"
CLINICAL_SYSTEM = "http://terminology.hl7.org/CodeSystem/condition-clinical"
OBSERVATION = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
               "valueQuantity": {"value": 72, "unit": "kg", "comparator": "<"}}
BOGUS_STATUS = "Observation.status: 'bogus' is not in the required ValueSet " + OBSERVATION_STATUS
CONDITION = {"resourceType": "Condition", "subject": {"reference": "Patient/p1"},
             "clinicalStatus": {"coding": [{"system": CLINICAL_SYSTEM, "code": "active"}]}}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def changed(base: dict, **changes: object) -> dict:
    body = copy.deepcopy(base)
    body.update(changes)
    return body


def refused(resource: dict) -> list[tuple[str, str, str]]:
    """(code, expression, diagnostics) of every issue validation raises for `resource`."""
    with pytest.raises(FhirError) as caught:
        validate_resource(resource)
    assert caught.value.status == 400
    return [(issue.code, issue.expression[0], issue.diagnostics) for issue in caught.value.issues]


def only_issue(response) -> dict:
    issues = response.json()["issue"]
    assert len(issues) == 1, issues
    return issues[0]


async def observations(client) -> int:
    response = await client.get("/Observation", params={"_summary": "count"})
    assert response.status_code == 200, response.text
    return response.json()["total"]


# --- the generated table ----------------------------------------------------------------------------------------

def test_generated_bindings_are_current_and_cover_datatypes_and_backbones() -> None:
    table = generated_bindings(SHARED / "spec" / "r4")
    assert table == required_bindings()
    assert sum(map(len, table.values())) == 367  # R4: 368 required bindings, less SimpleQuantity.comparator (max 0)
    assert table["Observation"]["status"] == OBSERVATION_STATUS  # the `|4.0.1` version is dropped
    for owner, name in [("Quantity", "comparator"), ("Age", "comparator"), ("MoneyQuantity", "comparator"),
                        ("Identifier", "use"), ("HumanName", "use"), ("ContactPoint", "system"), ("Address", "use"),
                        ("Address", "type"), ("Narrative", "status"), ("Timing.repeat", "when"),
                        ("Patient.contact", "gender"), ("Condition", "clinicalStatus")]:
        assert name in table[owner], (owner, name)
    assert "SimpleQuantity" not in table


def test_every_valueset_is_expanded_except_the_listed_ones() -> None:
    valuesets = {valueset for bound in required_bindings().values() for valueset in bound.values()}
    assert len(valuesets) == 224
    not_expanded = {valueset: checked_by(valueset) for valueset in valuesets if checked_by(valueset) != "expansion"}
    assert not_expanded == {"http://hl7.org/fhir/ValueSet/mimetypes": "grammar",
                            "http://hl7.org/fhir/ValueSet/currencies": None,
                            "http://hl7.org/fhir/ValueSet/ucum-units": None,
                            "http://loinc.org/vs/LL379-9": None}


def _r4b_field(owner: str, name: str) -> typing.Any:
    """The R4B model field of `owner.name` (a backbone owner by its path), or None if R4B has none."""
    parts = owner.split(".")
    try:
        model = get_fhir_model_class(parts[0])
    except (KeyError, ValueError):
        return None
    for part in parts[1:] + [name]:
        field = model.model_fields.get(part)
        if field is None or part == name:
            return field
        stack, model = [field.annotation], None
        while stack and model is None:  # Optional[List[Model]] -> Model
            candidate = stack.pop()
            if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                model = candidate
            stack.extend(typing.get_args(candidate))
        if model is None:
            return None
    return None


def test_code_lists_agree_with_r4b_models() -> None:
    """fhir.resources lists a bound code's values in `enum_values` (without checking them): where that list is
    complete (no "+"), it is exactly what the R4 check accepts; and none of those codes is refused."""
    terminology, compared = Terminology.load(), 0
    for owner, bound in required_bindings().items():
        for name, valueset in bound.items():
            field = _r4b_field(owner, name)
            listed = ((field.json_schema_extra or {}) if field is not None else {}).get("enum_values")
            # (CapabilityStatement.format's `enum_values` are words of its short definition, not codes)
            if not listed or "+" in listed or checked_by(valueset) != "expansion":
                continue
            expected = {code for _, code in terminology.expand(valueset)}
            assert set(listed) == expected, (owner, name)
            compared += 1
    assert compared >= 150


# --- validation ---------------------------------------------------------------------------------------------------

def test_code_elements_of_resources_backbones_and_datatypes() -> None:
    validate_resource(OBSERVATION)
    assert refused(changed(OBSERVATION, status="bogus")) == [("code-invalid", "Observation.status", BOGUS_STATUS)]
    patient = {"resourceType": "Patient", "name": [{"use": "official", "family": "Doe"}],
               "identifier": [{"use": "usual", "value": "1"}], "telecom": [{"system": "fax", "value": "1"}],
               "address": [{"use": "home", "type": "both"}], "contact": [{"gender": "other"}],
               "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}}
    validate_resource(patient)
    bad = changed(patient, name=[{"use": "bogus"}], identifier=[{"use": "Usual"}], telecom=[{"system": "telex"}],
                  address=[{"use": "home", "type": "house"}], contact=[{"gender": "f"}],
                  text={"status": "made-up", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'})
    assert [expression for _, expression, _ in refused(bad)] == [
        "Patient.name[0].use", "Patient.identifier[0].use", "Patient.telecom[0].system", "Patient.address[0].type",
        "Patient.contact[0].gender", "Patient.text.status"]
    assert refused(changed(OBSERVATION, valueQuantity={"value": 1, "comparator": "=="}))[0][1] == \
        "Observation.valueQuantity.comparator"


def test_code_arrays_and_valuesets_that_import_several_systems() -> None:
    """Timing.repeat.when is bound to event-timing: FHIR's own codes plus the v3 TimingEvent ones."""
    request = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationCodeableConcept": {"text": "aspirin"},
               "dosageInstruction": [{"timing": {"repeat": {"when": ["MORN", "ACM"], "dayOfWeek": ["mon"]}}}]}
    validate_resource(request)
    request["dosageInstruction"][0]["timing"]["repeat"]["dayOfWeek"] = ["mon", "funday"]
    assert refused(request)[0][1] == "MedicationRequest.dosageInstruction[0].timing.repeat.dayOfWeek[1]"


def test_codeable_concept_needs_one_coding_from_the_valueset() -> None:
    validate_resource(CONDITION)
    translated = {"coding": [{"system": "http://example.org/local", "code": "A"},
                             {"system": CLINICAL_SYSTEM, "code": "active"}], "text": "active"}
    validate_resource(changed(CONDITION, clinicalStatus=translated))
    expected = f"Condition.clinicalStatus: no coding is from the required ValueSet {CONDITION_CLINICAL}"
    wrong_code = {"coding": [{"system": CLINICAL_SYSTEM, "code": "bogus"}]}
    assert refused(changed(CONDITION, clinicalStatus=wrong_code)) == [
        ("code-invalid", "Condition.clinicalStatus", expected + f" (found {CLINICAL_SYSTEM}|bogus)")]
    wrong_system = {"coding": [{"system": "http://example.org/local", "code": "active"}]}
    assert refused(changed(CONDITION, clinicalStatus=wrong_system))[0][1] == "Condition.clinicalStatus"
    no_system = {"coding": [{"code": "active"}]}
    assert refused(changed(CONDITION, clinicalStatus=no_system))[0][2] == expected + " (found (no system)|active)"
    assert refused(changed(CONDITION, clinicalStatus={"text": "active"})) == [
        ("code-invalid", "Condition.clinicalStatus", expected)]
    malformed = {"coding": [{"system": 1, "code": ["active"]}, "active"]}  # structure issues, and no coding
    assert {code for code, _, _ in refused(changed(CONDITION, clinicalStatus=malformed))} == {"structure",
                                                                                             "code-invalid"}


def test_coding_with_a_required_binding() -> None:
    """R4 core binds no Coding `required`; the check is the CodeableConcept's, for one coding."""
    check = bound_concept(CONDITION_CLINICAL, "Coding")
    assert check({"system": CLINICAL_SYSTEM, "code": "active"}) is None
    assert check({"system": CLINICAL_SYSTEM, "code": "bogus"}) == (
        "code-invalid", f"{CLINICAL_SYSTEM}|bogus is not in the required ValueSet {CONDITION_CLINICAL}")


def test_mime_types_are_checked_by_their_grammar() -> None:
    for content_type in ("text/plain; charset=UTF-8", "application/fhir+json", 'text/plain;format="a b"', "json"):
        validate_resource({"resourceType": "Binary", "contentType": content_type})
    for content_type in ("image png", "text", "text/", "/plain", "text/plain; charset"):
        assert refused({"resourceType": "Binary", "contentType": content_type})[0][:2] == (
            "code-invalid", "Binary.contentType"), content_type


def test_valuesets_without_expansion_are_not_checked() -> None:
    claim = {"resourceType": "Claim", "status": "active", "type": {"text": "x"}, "use": "claim",
             "patient": {"reference": "Patient/p1"}, "created": "2020-01-01",
             "provider": {"reference": "Organization/o1"}, "priority": {"text": "normal"},
             "total": {"value": 1, "currency": "NOTISO"},
             "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/c1"}}]}
    validate_resource(claim)  # Money.currency: ISO 4217 is not shipped
    assert refused(changed(claim, status="bogus"))[0][:2] == ("code-invalid", "Claim.status")


def test_contained_and_nested_resources_and_primitive_extensions() -> None:
    request = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "#m1"},
               "contained": [{"resourceType": "Medication", "id": "m1", "status": "bogus"}]}
    assert refused(request) == [("code-invalid", "MedicationRequest.contained[0].status",
                                 "MedicationRequest.contained[0].status: 'bogus' is not in the required ValueSet "
                                 "http://hl7.org/fhir/ValueSet/medication-status")]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": changed(OBSERVATION,
                                                                                              status="bogus")}]}
    assert refused(bundle)[0][1] == "Bundle.entry[0].resource.status"
    absent = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                             "valueCode": "unknown"}]}
    validate_resource(changed({k: v for k, v in OBSERVATION.items() if k != "status"}, _status=absent))
    assert refused(changed(OBSERVATION, status="bogus", _status=absent))[0][1] == "Observation.status"


# --- every write path, both backends -----------------------------------------------------------------------------

async def test_post_and_put_refuse_a_bogus_status_and_store_nothing(client):
    bogus = changed(OBSERVATION, status="bogus")
    response = await client.post("/Observation", json=bogus, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert only_issue(response) == {"severity": "error", "code": "code-invalid", "diagnostics": BOGUS_STATUS,
                                    "expression": ["Observation.status"]}
    response = await client.put("/Observation/o1", json=changed(bogus, id="o1"), headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert only_issue(response)["code"] == "code-invalid"
    assert await observations(client) == 0
    created = await client.put("/Observation/o1", json=changed(OBSERVATION, id="o1"), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    response = await client.put("/Observation/o1", json=changed(bogus, id="o1"), headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert (await client.get("/Observation/o1")).json() == created.json()
    conditional = await client.post("/Observation", json=bogus, headers={**FHIR_JSON, "If-None-Exist": "code=x"})
    assert conditional.status_code == 400, conditional.text
    assert await observations(client) == 1


async def test_datatype_and_codeable_concept_bindings_over_http(client):
    response = await client.post("/Patient", json={"resourceType": "Patient", "name": [{"use": "bogus"}]},
                                 headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert only_issue(response)["expression"] == ["Patient.name[0].use"]
    response = await client.post("/Observation", json=changed(OBSERVATION, valueQuantity={"value": 1,
                                                                                           "comparator": "~"}),
                                 headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert only_issue(response)["expression"] == ["Observation.valueQuantity.comparator"]
    bad = changed(CONDITION, clinicalStatus={"coding": [{"system": CLINICAL_SYSTEM, "code": "bogus"}]})
    response = await client.post("/Condition", json=bad, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert CONDITION_CLINICAL in only_issue(response)["diagnostics"]
    contained = {"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                 "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "#m1"},
                 "contained": [{"resourceType": "Medication", "id": "m1", "status": "bogus"}]}
    response = await client.post("/MedicationRequest", json=contained, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert only_issue(response)["expression"] == ["MedicationRequest.contained[0].status"]
    assert (await client.post("/Condition", json=CONDITION, headers=FHIR_JSON)).status_code == 201
    total = await client.get("/Condition", params={"_summary": "count"})
    assert total.json()["total"] == 1


async def test_patch_result_with_a_bogus_status_is_422(client):
    created = (await client.post("/Observation", json=OBSERVATION, headers=FHIR_JSON)).json()
    patch = [{"op": "replace", "path": "/status", "value": "bogus"}]
    response = await client.patch(f"/Observation/{created['id']}", json=patch, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    assert only_issue(response)["code"] == "code-invalid"
    assert only_issue(response)["diagnostics"] == BOGUS_STATUS
    assert (await client.get(f"/Observation/{created['id']}")).json() == created
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    response = await client.patch(f"/Observation/{created['id']}", json=patch, headers=JSON_PATCH)
    assert response.status_code == 200, response.text


def _entry(resource: dict) -> dict:
    return {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


async def test_batch_entry_with_a_bogus_status_is_refused_alone(client):
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [_entry(changed(OBSERVATION, status="bogus")), _entry(OBSERVATION)]}
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"].startswith("400")
    assert first["response"]["outcome"]["issue"][0]["code"] == "code-invalid"
    assert second["response"]["status"].startswith("201")
    assert await observations(client) == 1


async def test_transaction_entry_with_a_bogus_status_refuses_the_transaction(client):
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [_entry(OBSERVATION), _entry(changed(OBSERVATION, status="bogus"))]}
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    issue = only_issue(response)
    assert issue["code"] == "code-invalid" and OBSERVATION_STATUS in issue["diagnostics"]
    assert "Bundle.entry[1]" in " ".join(issue["expression"]) + issue["diagnostics"]
    assert await observations(client) == 0


async def test_a_stored_valueset_does_not_change_what_r4_requires(client):
    shadow = {"resourceType": "ValueSet", "url": OBSERVATION_STATUS, "status": "active",
              "compose": {"include": [{"system": "http://hl7.org/fhir/observation-status", "concept": [
                  {"code": "bogus"}]}]}}
    assert (await client.post("/ValueSet", json=shadow, headers=FHIR_JSON)).status_code == 201
    response = await client.post("/Observation", json=changed(OBSERVATION, status="bogus"), headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    assert (await client.post("/Observation", json=OBSERVATION, headers=FHIR_JSON)).status_code == 201


async def test_import_reports_the_bogus_line_and_loads_the_others(backend: str, tmp_path: Path):
    store = make_store(backend, tmp_path)
    if hasattr(store, "open"):
        await store.open()
    ctx = Context(store, "http://hearth.test/fhir")
    lines = [changed(OBSERVATION, id="o1"), changed(OBSERVATION, id="o2", status="bogus")]
    (tmp_path / "Observation.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
    try:
        report = await Loader(ctx).load(find_files([tmp_path / "Observation.ndjson"]))
        assert dict(report.counts) == {"Observation": 1}
        assert [(error.where, error.message) for error in report.errors] == [("line 2", BOGUS_STATUS)]
        with pytest.raises(FhirError):
            await crud.read(ctx, "Observation", "o2")
    finally:
        await store.close()
