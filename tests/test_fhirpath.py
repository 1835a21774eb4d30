"""The R4 element model, loaded once, and the FHIRPath core's locator (capability/elements.py, capability/fhirpath.py).

The compiled branches that search extraction runs are tested in test_search_extract.py, FHIRPath Patch in
test_patch.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hearth.capability.elements import element_model
from hearth.capability.fhirpath import FhirPathError, locator

ROOT = Path(__file__).resolve().parents[1]
PATIENT = {"resourceType": "Patient",
           "name": [{"use": "official", "given": ["Peter", "James"]}, {"use": "usual", "given": ["Jim"]}],
           "contained": [{"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}},
                         {"resourceType": "Organization", "id": "o1", "name": "Clinic"}]}


def located(path: str, resource: dict = PATIENT) -> list[tuple]:
    return [(node.key, node.index, node.type, node.value) for node in locator(path, resource["resourceType"])(resource)]


def test_the_element_table_is_read_once_by_all_its_users() -> None:
    """Validation, XML, the transaction's reference walk, FHIRPath Patch and the search registry share one model."""
    script = """
import sys
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
from hearth.capability.fhir_xml import json_to_xml
from hearth.capability.validation import validate_resource
from hearth.interactions.fhirpath_patch import select
from hearth.interactions.references import find_links
from hearth.search.registry import default_registry
patient = {"resourceType": "Patient", "managingOrganization": {"reference": "urn:uuid:1"}, "name": [{"family": "A"}]}
validate_resource(patient)
json_to_xml(patient)
assert find_links(patient) and select("Patient.name.family", patient)
assert default_registry().extractors("Patient")
print(sum(name.endswith("structure.json") for name in opened))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1"], done.stderr


def test_choice_elements_by_their_base_name() -> None:
    model = element_model()
    assert [key for key, _ in model.children("Observation", "effective")] == [
        "effectiveDateTime", "effectivePeriod", "effectiveTiming", "effectiveInstant"]
    element = model.elements("Observation")["valueQuantity"]
    assert (element.type, element.many, element.required, element.choice) == ("Quantity", False, False, "value")
    assert model.elements("Observation")["status"].required and model.elements("Patient")["name"].many
    assert model.code_system("Patient.gender") == "http://hl7.org/fhir/administrative-gender"


def test_located_nodes_know_their_place_and_type() -> None:
    [node] = locator("Patient.name.where(use = 'official').given[1]", "Patient")(PATIENT)
    assert (node.key, node.index, node.type, node.value) == ("given", 1, "string", "James")
    assert node.holder is PATIENT["name"][0] and node.element.many
    assert node.parent.value is PATIENT["name"][0] and node.parent.parent.holder is None  # the resource
    assert located("name.last().given.first()") == [("given", 0, "string", "Jim")]
    assert located("Patient") == [(None, None, "Patient", PATIENT)]


def test_resources_inside_are_typed_as_they_are_met() -> None:
    assert located("Patient.contained.where(id = 'm1').code") == [("code", None, "CodeableConcept",
                                                                    {"text": "aspirin"})]
    assert located("Patient.contained.name") == [("name", None, "string", "Clinic")]
    with pytest.raises(FhirPathError, match="no element 'nickname' on Medication/Organization"):
        located("Patient.contained.nickname")


def test_where_criteria_are_typed_fhirpath() -> None:
    observation = {"resourceType": "Observation", "component": [
        {"code": {"text": "a"}, "valueInteger": -5}, {"code": {"text": "b"}, "valueString": "x"}]}
    assert [value for *_, value in located("Observation.component.where(value = -5).code", observation)] == [
        {"text": "a"}]
    assert [value for *_, value in located("Observation.component.where(value.exists() and value != 'x')",
                                           observation)] == [observation["component"][0]]
    assert located("Observation.value.first()", {"resourceType": "Observation", "valueString": "x"}) == [
        ("valueString", None, "string", "x")]


@pytest.mark.parametrize("path, message", [
    ("Patient.contact.nickname", "no element 'nickname' on Patient.contact"),  # known from the model, not the data
    ("Patient.name.select(given)", "function select() is not supported"),
    ("Patient.name.where(given.matches('J.*'))", "function matches() is not supported"),
    ("Patient.name | Patient.gender", "'|' does not name elements"),
    ("%resource.name", "a %variable does not name elements"),
    ("Patient.name.first(1)", "first() takes no arguments"),
    ("Patient.name.where(", "unexpected end"),
    ("Patient.name.where(" + "(" * 400 + "use = 'x'" + ")" * 400 + ")", "nested more than 32 deep"),
    ("Patient.name" + ".first()" * 200, "longer than 600 tokens"),
])
def test_paths_that_locate_nothing_are_refused_before_they_run(path: str, message: str) -> None:
    with pytest.raises(FhirPathError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        locator(path, "Patient")
