"""capability.validation: R4 structural validation of resources."""

from __future__ import annotations

import bz2
import copy
from decimal import Decimal
from pathlib import Path

import pytest
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from capability import fhir_json
from capability.outcome import FhirError
from capability.resource_types import RESOURCE_TYPES
from capability.validation import validate_resource

SYNTHEA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120"
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
    "two choice variants": (changed(OBSERVATION, valueString="heavy"), "Observation.valueString", "structure"),
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
