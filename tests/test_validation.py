"""capability.validation: R4 structural validation of resources."""

from __future__ import annotations

import bz2
import copy
from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from hearth.capability import fhir_json
from hearth.capability.generate import DATA
from hearth.capability.generate_structure import structure
from hearth.capability.outcome import FhirError
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.capability.validation import validate_resource

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHEA = SHARED / "testdata" / "synthea-120"
PATIENT_BUNDLE = "057aa36e-b892-9964-75b9-ffb46b097e34.json.bz2"
HOSPITAL_BUNDLE = "0-hospitalInformation1625911868739.json.bz2"

OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2020-01-02T03:04:05+01:00",
    "valueQuantity": {"value": Decimal("72.50"), "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    "component": [{"code": {"text": "x"}, "valueInteger": 3}],
}
PATIENT = {
    "resourceType": "Patient", "id": "p1", "active": True, "gender": "female", "birthDate": "1970-02-28",
    "name": [{"family": "Doe", "given": ["Jane", "Ann"]}],
    "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Jane</div>'},
    "extension": [{"url": "http://example.org/x", "valueString": "y"}],
    "photo": [{"contentType": "image/png", "data": "aGVs\n bG8=", "size": 0}],
}
MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest", "status": "active", "intent": "order",
    "subject": {"reference": "Patient/p1"}, "medicationReference": {"reference": "Medication/m1"},
    "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
                           "doseAndRate": [{"doseQuantity": {"value": 1}}]}],
}
ABSENT = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}]}


def synthea(name: str) -> list[dict]:
    return [entry["resource"] for entry in fhir_json.loads(bz2.open(SYNTHEA / name).read())["entry"]]


def rejected(resource: dict) -> FhirError:
    with pytest.raises(FhirError) as caught:
        validate_resource(resource)
    assert caught.value.status == 400
    return caught.value


def expressions(error: FhirError) -> list[str]:
    return [expression for issue in error.issues for expression in issue.expression]


def without(base: dict, *keys: str) -> dict:
    return {key: value for key, value in base.items() if key not in keys}


def changed(base: dict, **changes: object) -> dict:
    body = copy.deepcopy(base)
    body.update(changes)
    return body


@pytest.mark.parametrize("bundle", [PATIENT_BUNDLE, HOSPITAL_BUNDLE])
def test_every_synthea_resource_is_valid(bundle: str) -> None:
    resources = synthea(bundle)
    assert len(resources) > 100
    for resource in resources:
        validate_resource(resource)


def test_hand_made_examples_are_valid() -> None:
    validate_resource(OBSERVATION)
    validate_resource(PATIENT)
    validate_resource(MEDICATION_REQUEST)


# --- invalid: (body, expression, code) -------------------------------------------------------------------

INVALID = {
    "unknown top-level": (changed(PATIENT, foo=1), "Patient.foo", "structure"),
    "unknown nested": (changed(PATIENT, name=[{"fmaily": "Doe"}]), "Patient.name[0].fmaily", "structure"),
    "unknown in backbone": (changed(OBSERVATION, component=[{"code": {"text": "x"}, "valueFoo": 1}]),
                            "Observation.component[0].valueFoo", "structure"),
    "unknown in datatype": (changed(OBSERVATION, valueQuantity={"value": 1, "units": "kg"}),
                            "Observation.valueQuantity.units", "structure"),
    "unknown in extension": (changed(PATIENT, extension=[{"url": "http://x", "valueString": "y", "z": 1}]),
                             "Patient.extension[0].z", "structure"),
    "number for string": (changed(PATIENT, gender=1), "Patient.gender", "structure"),
    "string for boolean": (changed(PATIENT, active="true"), "Patient.active", "structure"),
    "string for decimal": (changed(OBSERVATION, valueQuantity={"value": "72.5"}),
                           "Observation.valueQuantity.value", "structure"),
    "boolean for integer": (changed(OBSERVATION, component=[{"code": {"text": "x"}, "valueInteger": True}]),
                            "Observation.component[0].valueInteger", "structure"),
    "object for string": (changed(PATIENT, gender={"code": "female"}), "Patient.gender", "structure"),
    "string for object": (changed(OBSERVATION, code="8302-2"), "Observation.code", "structure"),
    "object for array": (changed(PATIENT, name={"family": "Doe"}), "Patient.name", "structure"),
    "array for object": (changed(OBSERVATION, code=[{"text": "x"}]), "Observation.code", "structure"),
    "array for primitive": (changed(PATIENT, gender=["female"]), "Patient.gender", "structure"),
    "string for primitive array": (changed(PATIENT, name=[{"given": "Jane"}]), "Patient.name[0].given",
                                   "structure"),
    "empty array": (changed(PATIENT, name=[]), "Patient.name", "structure"),
    "empty object": (changed(OBSERVATION, subject={}), "Observation.subject", "structure"),
    "empty string": (changed(PATIENT, gender=""), "Patient.gender", "value"),
    "bad month": (changed(PATIENT, birthDate="1990-13-01"), "Patient.birthDate", "value"),
    "not a calendar date": (changed(PATIENT, birthDate="2023-02-29"), "Patient.birthDate", "value"),
    "dateTime without zone": (changed(OBSERVATION, effectiveDateTime="2020-01-02T03:04:05"),
                              "Observation.effectiveDateTime", "value"),
    "instant without seconds": (changed(OBSERVATION, issued="2020-01-02T03:04Z"), "Observation.issued", "value"),
    "bad time": (changed(without(OBSERVATION, "valueQuantity"), valueTime="24:00:00"), "Observation.valueTime",
                 "value"),
    "bad id": (changed(PATIENT, id="a b"), "Patient.id", "value"),
    "code with double space": (changed(PATIENT, gender="fe  male"), "Patient.gender", "value"),
    "uri with space": (changed(PATIENT, implicitRules="http://x y"), "Patient.implicitRules", "value"),
    "integer out of range": (changed(OBSERVATION, component=[{"code": {"text": "x"}, "valueInteger": 2**31}]),
                             "Observation.component[0].valueInteger", "value"),
    "integer with fraction": (changed(OBSERVATION, component=[{"code": {"text": "x"}, "valueInteger": Decimal("1.0")}]),
                              "Observation.component[0].valueInteger", "value"),
    "positiveInt zero": (changed(MEDICATION_REQUEST, dosageInstruction=[{"timing": {"repeat": {"frequency": 0}}}]),
                         "MedicationRequest.dosageInstruction[0].timing.repeat.frequency", "value"),
    "unsignedInt negative": (changed(PATIENT, photo=[{"data": "aGk=", "size": -1}]), "Patient.photo[0].size",
                             "value"),
    "bad base64": (changed(PATIENT, photo=[{"data": "abc"}]), "Patient.photo[0].data", "value"),
    "base64 padding mid-stream": (changed(PATIENT, photo=[{"data": "aGk=aGVs"}]), "Patient.photo[0].data", "value"),
    "two choice variants": (changed(OBSERVATION, valueString="heavy"), "Observation.valueString", "structure"),
    "choice variant by extension": (changed(OBSERVATION, _valueString=ABSENT), "Observation.valueString",
                                    "structure"),
    "missing status": (without(OBSERVATION, "status"), "Observation.status", "required"),
    "missing code": (without(OBSERVATION, "code"), "Observation.code", "required"),
    "missing required choice": (without(MEDICATION_REQUEST, "medicationReference"),
                                "MedicationRequest.medication[x]", "required"),
    "extension without url": (changed(PATIENT, extension=[{"valueString": "y"}]), "Patient.extension[0].url",
                              "required"),
    "extension without value (ext-1)": (changed(PATIENT, extension=[{"url": "http://x"}]), "Patient.extension[0]",
                                        "invalid"),
    "div not a div": (changed(PATIENT, text={"status": "generated", "div": "<p>x</p>"}), "Patient.text.div",
                      "value"),
    "SimpleQuantity comparator": (changed(MEDICATION_REQUEST,
                                          dispenseRequest={"quantity": {"value": 1, "comparator": "<"}}),
                                  "MedicationRequest.dispenseRequest.quantity.comparator", "structure"),
    "R4B-only element": ({"resourceType": "ActivityDefinition", "status": "draft", "subjectCanonical": "http://x/y"},
                         "ActivityDefinition.subjectCanonical", "structure"),
}


@pytest.mark.parametrize("body, expression, code", INVALID.values(), ids=INVALID.keys())
def test_invalid_resources_name_the_element(body: dict, expression: str, code: str) -> None:
    error = rejected(body)
    assert expression in expressions(error)
    assert error.issues[expressions(error).index(expression)].code == code
    assert error.outcome()["issue"][0]["expression"]




# --- primitive extensions -------------------------------------------------------------------------------------


def test_primitive_extensions_are_valid() -> None:
    validate_resource(changed(PATIENT, _birthDate=ABSENT, _gender={"id": "g1"}))
    validate_resource(changed(PATIENT, name=[{"given": ["Jane", "Ann"], "_given": [None, ABSENT]}]))
    validate_resource(changed(PATIENT, name=[{"given": ["Jane", None], "_given": [None, ABSENT]}]))
    validate_resource(changed(PATIENT, name=[{"_given": [ABSENT]}]))
    # a required primitive may be present through its extension alone
    validate_resource(changed(without(OBSERVATION, "status"), _status=ABSENT))


BAD_PRIMITIVE_EXTENSIONS = {
    "_given object": ({"given": ["Jane"], "_given": ABSENT}, "Patient.name[0].given"),
    "_given too short": ({"given": ["Jane", "Ann"], "_given": [ABSENT]}, "Patient.name[0].given"),
    "_given entry a string": ({"given": ["Jane"], "_given": ["x"]}, "Patient.name[0].given[0]"),
    "null without extension": ({"given": ["Jane", None]}, "Patient.name[0].given[1]"),
    "both null": ({"given": ["Jane", None], "_given": [None, None]}, "Patient.name[0].given[1]"),
    "null extension without value": ({"_given": [None, ABSENT]}, "Patient.name[0].given[0]"),
    "unknown element in _given": ({"given": ["Jane"], "_given": [{"foo": 1}]}, "Patient.name[0].given[0].foo"),
    "_family an array": ({"family": "Doe", "_family": [ABSENT]}, "Patient.name[0].family"),
}


@pytest.mark.parametrize("name, expression", BAD_PRIMITIVE_EXTENSIONS.values(), ids=BAD_PRIMITIVE_EXTENSIONS.keys())
def test_bad_primitive_extension_shapes(name: dict, expression: str) -> None:
    error = rejected(changed(PATIENT, name=[name]))
    assert expression in expressions(error)
    assert {issue.code for issue in error.issues} == {"structure"}


def test_extension_on_a_complex_element_is_unknown() -> None:
    assert expressions(rejected(changed(OBSERVATION, _code=ABSENT))) == ["Observation._code"]


# --- contained and nested resources -----------------------------------------------------------------------

MEDICATION = {"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}}


def test_contained_resources_are_validated() -> None:
    validate_resource(changed(MEDICATION_REQUEST, contained=[MEDICATION], medicationReference={"reference": "#m1"}))
    bad = changed(MEDICATION_REQUEST, contained=[changed(MEDICATION, form="tablet")])
    error = rejected(bad)
    assert expressions(error) == ["MedicationRequest.contained[0].form"]
    assert error.issues[0].code == "structure"
    unknown = rejected(changed(MEDICATION_REQUEST, contained=[{"resourceType": "Medicament", "id": "m1"}]))
    assert expressions(unknown) == ["MedicationRequest.contained[0].resourceType"]
    nested = rejected(changed(MEDICATION_REQUEST, contained=[changed(MEDICATION, contained=[MEDICATION])]))
    assert expressions(nested) == ["MedicationRequest.contained[0].contained"]
    versioned = rejected(changed(MEDICATION_REQUEST, contained=[changed(MEDICATION, meta={"versionId": "1"})]))
    assert expressions(versioned) == ["MedicationRequest.contained[0].meta"]


def test_bundle_entry_resources_are_validated() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": PATIENT}, {"resource": OBSERVATION}]}
    validate_resource(bundle)
    bundle["entry"][1]["resource"] = without(OBSERVATION, "status")
    assert expressions(rejected(bundle)) == ["Bundle.entry[1].resource.status"]


# --- R4 against R4B -------------------------------------------------------------------------------------------


def test_r4_only_resource_type_is_accepted() -> None:
    product = {"resourceType": "MedicinalProduct", "id": "mp1", "name": [{"productName": "Aspirin 100 mg"}]}
    assert "MedicinalProduct" in RESOURCE_TYPES
    with pytest.raises(ValueError):
        get_fhir_model_class("MedicinalProduct")  # R4B has no such model: the R4 table decides alone
    validate_resource(product)
    error = rejected({"resourceType": "MedicinalProduct", "name": [{"productname": "x"}]})
    assert set(expressions(error)) == {"MedicinalProduct.name[0].productname", "MedicinalProduct.name[0].productName"}
    assert {issue.code for issue in error.issues} == {"structure", "required"}


def test_r4b_only_element_is_rejected_though_r4b_accepts_it() -> None:
    body = {"resourceType": "ActivityDefinition", "status": "draft", "subjectCanonical": "http://example.org/x"}
    get_fhir_model_class("ActivityDefinition").model_validate(body)
    assert expressions(rejected(body)) == ["ActivityDefinition.subjectCanonical"]
    validate_resource(without(body, "subjectCanonical") | {"subjectReference": {"reference": "Group/g"}})


def test_extension_value_types_are_r4s() -> None:
    r4b_only = changed(PATIENT, extension=[{"url": "http://x", "valueRatioRange": {"denominator": {"value": 1}}}])
    get_fhir_model_class("Patient").model_validate(r4b_only)
    assert expressions(rejected(r4b_only)) == ["Patient.extension[0].valueRatioRange"]
    validate_resource(changed(PATIENT, extension=[{"url": "http://x", "valueMeta": {"source": "http://s"}}]))


R4B_AGREES = {  # mutations of types that R4 and R4B define alike: the R4B models reject them too
    "unknown element": changed(PATIENT, foo=1),
    "bad date": changed(PATIENT, birthDate="1990-13-01"),
    "array for object": changed(OBSERVATION, code=[{"text": "x"}]),
    "object for array": changed(PATIENT, name={"family": "Doe"}),
    "two choice variants": changed(OBSERVATION, valueString="heavy"),
    "missing required": without(OBSERVATION, "status"),
}


@pytest.mark.parametrize("body", R4B_AGREES.values(), ids=R4B_AGREES.keys())
def test_rejections_agree_with_r4b_models(body: dict) -> None:
    with pytest.raises(ValidationError):
        get_fhir_model_class(body["resourceType"]).model_validate(body)
    rejected(body)


LAX_JSON = {  # pydantic's lax mode in the R4B models coerces these; FHIR JSON types are strict
    "string for boolean": changed(PATIENT, active="yes"),
    "string for decimal": changed(OBSERVATION, valueQuantity={"value": "72.5"}),
    "boolean for integer": changed(OBSERVATION, component=[{"code": {"text": "x"}, "valueInteger": True}]),
    "number for boolean": changed(without(OBSERVATION, "valueQuantity"), valueBoolean=1),
}


@pytest.mark.parametrize("body", LAX_JSON.values(), ids=LAX_JSON.keys())
def test_json_types_are_stricter_than_r4b_models(body: dict) -> None:
    get_fhir_model_class(body["resourceType"]).model_validate(body)
    assert rejected(body).issues[0].code == "structure"


def test_valid_synthea_resources_agree_with_r4b_models() -> None:
    one_of_each = {resource["resourceType"]: resource for resource in synthea(PATIENT_BUNDLE)}
    assert len(one_of_each) > 15
    for resource in one_of_each.values():
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        validate_resource(resource)


# --- defensive ------------------------------------------------------------------------------------------------


def test_not_a_resource() -> None:
    assert expressions(rejected([PATIENT])) == ["Resource"]
    assert expressions(rejected({"resourceType": "Patientx"})) == ["Resource.resourceType"]
    assert expressions(rejected({"id": "x"})) == ["Resource.resourceType"]


def test_issues_are_capped_but_all_named() -> None:
    body = changed(PATIENT, **{f"bad{i}": i for i in range(200)})
    error = rejected(body)
    assert 10 <= len(error.issues) <= 100
    assert expressions(error)[0] == "Patient.bad0"
    assert "Patient.bad0" in error.diagnostics


def test_generated_table_is_current() -> None:
    table = structure(SHARED / "spec" / "r4")
    assert table == fhir_json.loads((DATA / "structure.json").read_bytes())
    assert table["types"]["Patient"]["id"] == ["id", 0]  # not the snapshot's System.String
    assert table["types"]["MedicationRequest"]["dosageInstruction"] == ["Dosage", 1]
    assert table["types"]["Dosage.doseAndRate"]["doseQuantity"] == ["SimpleQuantity", 0, "dose"]
    assert "comparator" not in table["types"]["SimpleQuantity"]
    assert table["types"]["Questionnaire.item"]["item"] == ["Questionnaire.item", 1]  # contentReference
