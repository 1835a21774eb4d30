"""Value normalisation, the FHIRPath subset compiler, index extraction and the SearchParameter registry."""

from __future__ import annotations

import bz2
import sys
import json
from decimal import Decimal
from pathlib import Path

import pytest

from hearth.capability import fhir_json
from hearth.capability.elements import element_model
from hearth.capability.fhirpath import FhirPathError, run_branch
from hearth.capability.outcome import FhirError
from hearth.capability.resource_types import RESOURCE_TYPES
from hearth.search.registry import DATA, SearchRegistry, default_registry
from hearth.search.entries import (MAX_INSTANT, MIN_INSTANT, CompositeEntry, DateEntry, NumberEntry, QuantityEntry,
                            ReferenceEntry, StringEntry, TokenEntry, UriEntry)
from hearth.search.extract import extract
from hearth.search.fhirpath import compile_path
from hearth.search.normalize import date_range, normalize_string, number_range, split_canonical, split_reference

SYNTHEA = Path("/work/shared/testdata/synthea-120")


def entries_of(resource: dict, code: str, **kwargs) -> list:
    return [e for e in extract(resource, kwargs.pop("registry", default_registry()), **kwargs) if e.param == code]


# --- normalize -----------------------------------------------------------------------------------

def test_normalize_string_folds_case_accents_and_space() -> None:
    assert normalize_string("  Élodie   MÜLLER\tstraße ") == "elodie muller strasse"
    assert normalize_string("Ann") == "ann"


@pytest.mark.parametrize("value, lo, hi", [
    ("2020", "2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999"),
    ("2020-02", "2020-02-01T00:00:00.000000", "2020-02-29T23:59:59.999999"),
    ("2021-12", "2021-12-01T00:00:00.000000", "2021-12-31T23:59:59.999999"),
    ("2020-03-04", "2020-03-04T00:00:00.000000", "2020-03-04T23:59:59.999999"),
    ("2020-03-04T10:00", "2020-03-04T10:00:00.000000", "2020-03-04T10:00:59.999999"),
    ("2020-03-04T10:00:00Z", "2020-03-04T10:00:00.000000", "2020-03-04T10:00:00.999999"),
    ("2020-03-04T10:00:00+02:00", "2020-03-04T08:00:00.000000", "2020-03-04T08:00:00.999999"),
    ("2020-03-04T23:30:00-05:00", "2020-03-05T04:30:00.000000", "2020-03-05T04:30:00.999999"),
    ("2020-03-04T10:00:00.5Z", "2020-03-04T10:00:00.500000", "2020-03-04T10:00:00.599999"),
    ("2020-03-04T10:00:00.123456789Z", "2020-03-04T10:00:00.123456", "2020-03-04T10:00:00.123456"),
    ("2020-03-04T10:00:00", "2020-03-04T10:00:00.000000", "2020-03-04T10:00:00.999999"),  # no zone: UTC
    ("9999-12-31", "9999-12-31T00:00:00.000000", MAX_INSTANT),
    ("0001-01-01T00:30:00+01:00", MIN_INSTANT, MIN_INSTANT),
])
def test_date_range(value: str, lo: str, hi: str) -> None:
    assert date_range(value) == (lo, hi)


@pytest.mark.parametrize("value", ["20", "2020-13", "2020-02-30", "2020-03-04T25:00", "2020Z", "2020-03-04T10",
                                   "2020-03-04T10:00+15:00", "2020-03-04 10:00", ""])
def test_date_range_rejects_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        date_range(value)


def test_number_range_follows_precision() -> None:
    assert number_range("100") == (100.0, 99.5, 100.5)
    assert number_range("100.00") == (100.0, 99.995, 100.005)
    assert number_range("1e2") == (100.0, 50.0, 150.0)  # one significant digit
    assert number_range(Decimal("72.50")) == (72.5, 72.495, 72.505)
    assert number_range(7) == (7.0, 6.5, 7.5)
    assert number_range("-0.1") == (-0.1, -0.15, -0.05)
    for bad in ("abc", "NaN", "Infinity", True):
        with pytest.raises(ValueError):
            number_range(bad)


def test_split_reference_and_canonical() -> None:
    base = "https://hearth.example/fhir"
    assert split_reference("Patient/1") == ("Patient", "1", None)
    assert split_reference("Patient/1/_history/3") == ("Patient", "1", None)
    assert split_reference("42") == (None, "42", None)
    assert split_reference(base + "/Patient/1", base) == ("Patient", "1", None)
    other = "https://other.example/fhir/Patient/1"
    assert split_reference(other, base) == ("Patient", "1", other)
    assert split_reference("urn:uuid:abc") == (None, None, "urn:uuid:abc")
    assert split_reference("http://loinc.org/Foo/1") == (None, None, "http://loinc.org/Foo/1")
    assert split_reference("#contained") is None
    assert split_canonical("http://x/Questionnaire/q|2.0") == ("http://x/Questionnaire/q", "2.0")
    assert split_canonical("http://x/Questionnaire/q") == ("http://x/Questionnaire/q", None)


# --- FHIRPath ------------------------------------------------------------------------------------

def evaluate(expression: str, resource: dict) -> list[tuple[str, list]]:
    branches = compile_path(expression, element_model(), resource["resourceType"])
    return [(b.type, run_branch(b)([resource], resource)) for b in branches]


def test_choice_elements_resolve_to_json_names() -> None:
    obs = {"resourceType": "Observation", "effectivePeriod": {"start": "2020"}, "valueQuantity": {"value": 1}}
    assert [t for t, _ in evaluate("Observation.effective", obs)] == ["dateTime", "Period", "Timing", "instant"]
    assert evaluate("Observation.effective", obs)[1] == ("Period", [{"start": "2020"}])
    assert evaluate("(Observation.value as Quantity)", obs) == [("Quantity", [{"value": 1}])]
    assert evaluate("Observation.value.as(Quantity)", obs) == [("Quantity", [{"value": 1}])]
    assert evaluate("Observation.value.ofType(string)", obs) == [("string", [])]


def test_where_filters_and_extensions() -> None:
    obs = {"resourceType": "Observation", "subject": {"reference": "Patient/1"}}
    assert evaluate("Observation.subject.where(resolve() is Patient)", obs)[0][1] == [{"reference": "Patient/1"}]
    assert evaluate("Observation.subject.where(resolve() is Group)", obs)[0][1] == []
    patient = {"resourceType": "Patient",
               "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
               "extension": [{"url": "u1", "valueString": "x"}, {"url": "u2", "valueCode": "y"}],
               "name": [{"family": "A"}, {"family": "B"}]}
    assert evaluate("Patient.telecom.where(system='email')", patient)[0][1] == [{"system": "email", "value": "a@b"}]
    values = dict(evaluate("Patient.extension('u1').value", patient))
    assert values["string"] == ["x"] and values["code"] == []
    values = dict(evaluate("Patient.extension.where(url='u2').value", patient))
    assert values["code"] == ["y"] and values["string"] == []
    assert evaluate("Patient.name.first().family", patient) == [("string", ["A"])]
    assert evaluate("Patient.name.last().family", patient) == [("string", ["B"])]
    assert evaluate("Patient.name[1].family", patient) == [("string", ["B"])]
    assert evaluate("name.family | Patient.name.given", patient) == [("string", ["A", "B"]), ("string", [])]
    risk = {"resourceType": "RiskAssessment", "prediction": [
        {"probabilityDecimal": Decimal("0.25"), "rationale": "a"}, {"probabilityDecimal": 1, "rationale": "b"}]}
    assert evaluate("RiskAssessment.prediction.where(probability = 0.25).rationale", risk) == [("string", ["a"])]
    assert evaluate("RiskAssessment.prediction.where(probability != 1).rationale", risk) == [("string", ["a"])]


@pytest.mark.parametrize("patient, result", [
    ({}, [False]), ({"deceasedBoolean": False}, [False]), ({"deceasedBoolean": True}, [True]),
    ({"deceasedDateTime": "2020"}, [True]),
])
def test_boolean_expressions(patient: dict, result: list) -> None:
    resource = {"resourceType": "Patient", **patient}
    assert evaluate("Patient.deceased.exists() and Patient.deceased != false", resource) == [("boolean", result)]


@pytest.mark.parametrize("expression, message", [
    ("Patient.nickname", "no element 'nickname'"),
    ("Patient.name.substring(1)", "substring() is not supported"),
    ("Patient.name as Quantity", "no element of type Quantity"),
    ("Patient.link.other.resolve().name", "navigating into resolve()"),
    ("Patient.name.given.where(", "unexpected end"),
    ("Patient.gender in %codes", "not supported"),
    ("Observation.code", "selects nothing"),
    ("(Patient.deceased).first()", "first() over several element types"),
])
def test_unsupported_expressions_fail_to_compile(expression: str, message: str) -> None:
    with pytest.raises(FhirPathError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_path(expression, element_model(), "Patient")


# --- extraction per type -------------------------------------------------------------------------

PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "meta": {"lastUpdated": "2024-05-06T07:08:09.123+02:00", "profile": ["http://example.org/StructureDefinition/p"],
             "tag": [{"system": "http://example.org/tags", "code": "t1"}],
             "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
             "source": "http://upstream.example/fhir"},
    "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}],
                             "text": "Medical Record"}},
                   {"system": "http://ssn.example", "value": "999"}],
    "active": True,
    "name": [{"use": "official", "family": "Ström", "given": ["Åsa", "Maria"], "prefix": ["Dr."],
              "text": "Dr. Åsa Maria Ström"},
             {"family": "Smith", "given": ["Smith"]}],
    "telecom": [{"system": "phone", "value": "555-1234"}, {"system": "email", "value": "asa@example.org"}],
    "gender": "female", "birthDate": "1970-01-15",
    "address": [{"line": ["1 Main St", "Apt 2"], "city": "Springfield", "postalCode": "12345", "country": "US"}],
    "deceasedDateTime": "2020-02-03T04:05:06Z",
    "generalPractitioner": [{"reference": "https://hearth.example/fhir/Practitioner/dr1"}],
    "managingOrganization": {"reference": "#org"},
    "link": [{"other": {"identifier": {"system": "http://x", "value": "other-1"}}, "type": "seealso"}],
}


def test_common_parameters() -> None:
    assert entries_of(PATIENT, "_id") == [TokenEntry("_id", None, "p1")]
    assert entries_of(PATIENT, "_lastUpdated") == [
        DateEntry("_lastUpdated", "2024-05-06T05:08:09.123000", "2024-05-06T05:08:09.123999")]
    assert entries_of(PATIENT, "_tag") == [TokenEntry("_tag", "http://example.org/tags", "t1")]
    assert entries_of(PATIENT, "_security")[0].code == "R"
    assert entries_of(PATIENT, "_profile") == [UriEntry("_profile", "http://example.org/StructureDefinition/p")]
    assert entries_of(PATIENT, "_source") == [UriEntry("_source", "http://upstream.example/fhir")]


def test_human_name_address_and_strings() -> None:
    names = {(e.norm, e.exact) for e in entries_of(PATIENT, "name")}
    assert names == {("strom", "Ström"), ("asa", "Åsa"), ("maria", "Maria"), ("dr.", "Dr."),
                     ("dr. asa maria strom", "Dr. Åsa Maria Ström"), ("smith", "Smith")}
    assert len(entries_of(PATIENT, "name")) == len(names)  # "Smith" twice is indexed once
    assert {e.exact for e in entries_of(PATIENT, "family")} == {"Ström", "Smith"}
    assert {e.exact for e in entries_of(PATIENT, "address")} == {"1 Main St", "Apt 2", "Springfield", "12345", "US"}
    assert entries_of(PATIENT, "address-city") == [StringEntry("address-city", "springfield", "Springfield")]


def test_tokens() -> None:
    identifiers = entries_of(PATIENT, "identifier")
    assert TokenEntry("identifier", "http://hospital.example/mrn", "MRN-1", "medical record",
                      "http://terminology.hl7.org/CodeSystem/v2-0203", "MR") in identifiers
    assert TokenEntry("identifier", "http://ssn.example", "999") in identifiers
    assert entries_of(PATIENT, "phone") == [TokenEntry("phone", "phone", "555-1234")]
    assert entries_of(PATIENT, "email") == [TokenEntry("email", "email", "asa@example.org")]
    assert len(entries_of(PATIENT, "telecom")) == 2
    # a code with a required single-system binding carries that system; other codes none
    assert entries_of(PATIENT, "gender") == [
        TokenEntry("gender", "http://hl7.org/fhir/administrative-gender", "female")]
    assert entries_of(OBSERVATION, "status") == [
        TokenEntry("status", "http://hl7.org/fhir/observation-status", "final")]
    assert entries_of(PATIENT, "_id") == [TokenEntry("_id", None, "p1")]
    assert entries_of(PATIENT, "active") == [TokenEntry("active", None, "true")]
    assert entries_of(PATIENT, "deceased") == [TokenEntry("deceased", None, "true")]


def test_dates_and_references() -> None:
    assert entries_of(PATIENT, "birthdate") == [
        DateEntry("birthdate", "1970-01-15T00:00:00.000000", "1970-01-15T23:59:59.999999")]
    assert entries_of(PATIENT, "death-date")[0].lo == "2020-02-03T04:05:06.000000"
    base = "https://hearth.example/fhir"
    assert entries_of(PATIENT, "general-practitioner", base_url=base) == [
        ReferenceEntry("general-practitioner", "Practitioner", "dr1")]
    assert entries_of(PATIENT, "general-practitioner") == [
        ReferenceEntry("general-practitioner", "Practitioner", None, base + "/Practitioner/dr1")]
    assert entries_of(PATIENT, "organization") == []  # contained references are not indexed
    assert entries_of(PATIENT, "link") == [
        ReferenceEntry("link", None, None, identifier_system="http://x", identifier_value="other-1")]


OBSERVATION = {
    "resourceType": "Observation", "id": "o1", "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9", "display": "Blood pressure panel"}],
             "text": "BP"},
    "subject": {"reference": "Patient/p1"},
    "effectivePeriod": {"start": "2021-03-04T10:00:00Z"},
    "component": [
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
         "valueQuantity": {"value": Decimal("120.0"), "unit": "mmHg", "system": "http://unitsofmeasure.org",
                           "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
         "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
    ],
}


def test_codeable_concept_period_and_patient() -> None:
    assert entries_of(OBSERVATION, "code") == [
        TokenEntry("code", "http://loinc.org", "85354-9", "blood pressure panel"), TokenEntry("code", None, None, "bp")]
    assert entries_of(OBSERVATION, "date") == [DateEntry("date", "2021-03-04T10:00:00.000000", MAX_INSTANT)]
    ended = {**OBSERVATION, "effectivePeriod": {"end": "2021"}}
    assert entries_of(ended, "date") == [DateEntry("date", MIN_INSTANT, "2021-12-31T23:59:59.999999")]
    assert entries_of(OBSERVATION, "patient") == [ReferenceEntry("patient", "Patient", "p1")]
    assert entries_of({**OBSERVATION, "subject": {"reference": "Group/g"}}, "patient") == []
    assert entries_of(OBSERVATION, "value-quantity") == []


def test_reference_forms() -> None:
    uuid = {**OBSERVATION, "subject": {"reference": "urn:uuid:1234", "type": "Patient"}}
    assert entries_of(uuid, "patient") == [ReferenceEntry("patient", "Patient", None, "urn:uuid:1234")]
    untyped = {**OBSERVATION, "subject": {"reference": "urn:uuid:1234"}}
    assert entries_of(untyped, "patient") == []
    assert entries_of(untyped, "subject") == [ReferenceEntry("subject", None, None, "urn:uuid:1234")]
    foreign = {**OBSERVATION, "subject": {"reference": "https://other.example/fhir/Patient/p1/_history/2"}}
    assert entries_of(foreign, "patient") == [
        ReferenceEntry("patient", "Patient", None, "https://other.example/fhir/Patient/p1")]
    logical = {**OBSERVATION, "subject": {"type": "Patient", "identifier": {"system": "urn:mrn", "value": "7"}}}
    assert entries_of(logical, "patient") == [
        ReferenceEntry("patient", "Patient", None, identifier_system="urn:mrn", identifier_value="7")]


def test_composite_component_code_value_quantity() -> None:
    composites = entries_of(OBSERVATION, "component-code-value-quantity")
    assert len(composites) == 2
    systolic = composites[0]
    assert isinstance(systolic, CompositeEntry)
    assert systolic.components == (
        TokenEntry("component-code", "http://loinc.org", "8480-6"),
        QuantityEntry("component-value-quantity", 120.0, 119.95, 120.05, "http://unitsofmeasure.org", "mm[Hg]",
                      "mmHg"))
    assert composites[1].components[0].code == "8462-4" and composites[1].components[1].lo == 79.5
    # code-value-quantity pairs Observation.code with Observation.value: no value here, so no entry
    assert entries_of(OBSERVATION, "code-value-quantity") == []
    assert len(entries_of(OBSERVATION, "combo-code-value-quantity")) == 2


def test_canonical_money_number_range_and_uri() -> None:
    response = {"resourceType": "QuestionnaireResponse", "status": "completed",
                "questionnaire": "http://example.org/Questionnaire/phq9|3.1"}
    assert entries_of(response, "questionnaire") == [
        ReferenceEntry("questionnaire", None, None, "http://example.org/Questionnaire/phq9", "3.1")]
    invoice = {"resourceType": "Invoice", "status": "issued",
               "totalGross": {"value": Decimal("12.50"), "currency": "EUR"}}
    assert entries_of(invoice, "totalgross") == [
        QuantityEntry("totalgross", 12.5, 12.495, 12.505, "urn:iso:std:iso:4217", "EUR", None)]
    risk = {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": Decimal("0.25")}, {"probabilityRange": {"low": {"value": 1}}}]}
    assert entries_of(risk, "probability") == [NumberEntry("probability", 0.25, 0.245, 0.255)]
    library = {"resourceType": "Library", "status": "active", "url": "http://example.org/Library/l",
               "type": {"text": "logic"},
               "useContext": [{"code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type",
                                        "code": "age"},
                               "valueRange": {"low": {"value": 18, "unit": "a"}}}],
               "relatedArtifact": [{"type": "depends-on", "resource": "http://example.org/Library/base|1"}]}
    quantity = entries_of(library, "context-quantity")
    assert quantity == [QuantityEntry("context-quantity", 18.0, 17.5, sys.float_info.max, None, None, "a")]
    assert entries_of(library, "url") == [UriEntry("url", "http://example.org/Library/l")]
    assert entries_of(library, "depends-on") == [
        ReferenceEntry("depends-on", None, None, "http://example.org/Library/base", "1")]
    composite = entries_of(library, "context-type-quantity")
    assert [c.components[0].code for c in composite] == ["age"]


def test_malformed_values_are_skipped_not_fatal() -> None:
    patient = {"resourceType": "Patient", "id": "x", "name": "Bob", "birthDate": "yesterday",
               "telecom": [1, None, {"system": "phone"}], "address": [{"line": "one line"}], "active": "yes",
               "generalPractitioner": ["Practitioner/1"], "identifier": {"value": "single"}}
    entries = extract(patient, default_registry())
    assert {e.param for e in entries} == {"_id", "address", "identifier", "deceased"}
    assert entries_of(patient, "deceased") == [TokenEntry("deceased", None, "false")]  # no deceased[x]: false
    assert entries_of(patient, "address") == [StringEntry("address", "one line", "one line")]
    observation = {"resourceType": "Observation", "valueQuantity": {"value": "abc"}, "subject": "Patient/1",
                   "effectiveDateTime": "2020-13-01", "code": {"coding": {"code": "x"}}}
    assert entries_of(observation, "value-quantity") == [] and entries_of(observation, "date") == []
    assert entries_of(observation, "code") == [TokenEntry("code", None, "x")]


# --- registry ------------------------------------------------------------------------------------

def test_registry_lookups() -> None:
    registry = default_registry()
    params = registry.params("Patient")
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "name", "birthdate"} <= set(params)
    assert "_text" not in params and "_content" not in params
    assert params["_profile"].type == "uri"
    code = registry.get("Observation", "code")
    assert code is not None and code.type == "token" and "Observation" in code.base
    assert registry.by_url(code.url) is code
    composite = registry.get("Observation", "component-code-value-quantity")
    assert [registry.by_url(url).code for url, _ in composite.components] == [
        "component-code", "component-value-quantity"]
    assert registry.get("Observation", "nope") is None and registry.params("NoSuchType") == {}


def test_unsupported_r4_parameters_are_few_and_explained() -> None:
    registry = default_registry()
    unsupported = {param.url: reason for t in RESOURCE_TYPES for param, reason in registry.unsupported(t)}
    supported = sum(len(registry.params(t)) for t in RESOURCE_TYPES)
    assert supported > 2500
    assert len(unsupported) <= 10, unsupported
    assert all(reason for reason in unsupported.values())
    assert "http://hl7.org/fhir/SearchParameter/Location-near" in unsupported
    assert "http://hl7.org/fhir/SearchParameter/Resource-content" in unsupported


def fresh_registry() -> SearchRegistry:
    return SearchRegistry(json.loads((DATA / "search_parameters.json").read_text()), element_model())


BIRTH_SEX = {
    "resourceType": "SearchParameter", "url": "http://example.org/SearchParameter/birthsex", "name": "birthsex",
    "status": "active", "code": "birthsex", "base": ["Patient"], "type": "token",
    "expression": "Patient.extension.where(url='http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex')"
                  ".value",
}


def test_register_custom_search_parameter() -> None:
    registry = fresh_registry()
    param = registry.register(BIRTH_SEX)
    assert param.custom and registry.get("Patient", "birthsex") is param
    patient = {"resourceType": "Patient", "extension": [
        {"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex", "valueCode": "F"}]}
    assert [e for e in extract(patient, registry) if e.param == "birthsex"] == [TokenEntry("birthsex", None, "F")]
    assert registry.generation == 1
    assert registry.unregister(BIRTH_SEX["url"]) is True
    assert registry.get("Patient", "birthsex") is None
    assert [e for e in extract(patient, registry) if e.param == "birthsex"] == []
    assert registry.unregister("http://hl7.org/fhir/SearchParameter/individual-gender") is False


@pytest.fixture(scope="module")
def rejecting_registry() -> SearchRegistry:
    """Shared by the rejection cases: a rejected registration changes nothing (asserted)."""
    return fresh_registry()


@pytest.mark.parametrize("change, message", [
    ({"expression": "Patient.extension.foo()"}, "cannot index"),
    ({"expression": "Patient.nickname"}, "cannot index"),
    ({"type": "special"}, "not supported"),
    ({"base": ["Nope"]}, "unknown base"),
    ({"code": "gender"}, "already has"),
    ({"url": "http://hl7.org/fhir/SearchParameter/individual-gender"}, "built-in"),
    ({"expression": None}, "expression"),
    ({"expression": "Patient.gender.where(" + "(" * 400 + "true" + ")" * 400 + ")"}, "nested more than 32 deep"),
    ({"expression": "Patient.gender" + " | Patient.gender" * 300}, "longer than 600 tokens"),
])
def test_register_rejects_what_it_cannot_index(rejecting_registry: SearchRegistry, change: dict,
                                               message: str) -> None:
    with pytest.raises(FhirError, match=message) as caught:
        rejecting_registry.register({k: v for k, v in {**BIRTH_SEX, **change}.items() if v is not None})
    assert caught.value.status == 400
    assert rejecting_registry.generation == 0 and rejecting_registry.get("Patient", "birthsex") is None


# --- Synthea -------------------------------------------------------------------------------------

def _load_as_stored(name: str) -> list[dict]:
    """A Synthea bundle's resources with `urn:uuid:` references rewritten to `Type/id`, as a transaction would."""
    bundle = fhir_json.loads(bz2.open(SYNTHEA / name).read())
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}

    def rewrite(node):
        if isinstance(node, dict):
            return {k: (local.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return [rewrite(entry["resource"]) for entry in bundle["entry"]]


def test_every_synthea_resource_extracts() -> None:
    names = sorted(p.name for p in SYNTHEA.glob("*.json.bz2"))
    resources = [r for name in names[:1] + names[2:4] for r in _load_as_stored(name)]
    by_type: dict[str, int] = {}
    for resource in resources:
        entries = extract(resource, default_registry())
        assert entries, resource["resourceType"]
        codes = {e.param for e in entries}
        by_type[resource["resourceType"]] = by_type.get(resource["resourceType"], 0) + 1
        assert "_id" in codes
        if resource["resourceType"] == "Observation":
            assert {"code", "subject", "patient", "date", "status"} <= codes
            if "valueQuantity" in resource:
                assert {"value-quantity", "code-value-quantity", "combo-code-value-quantity"} <= codes
        elif resource["resourceType"] == "Patient":
            assert {"name", "family", "given", "birthdate", "gender", "identifier", "address"} <= codes
        elif resource["resourceType"] == "Encounter":
            assert {"patient", "subject", "date", "class", "type", "status"} <= codes
        elif resource["resourceType"] == "Claim":
            assert {"patient", "created", "use", "provider"} <= codes
    assert by_type.get("Observation", 0) > 100 and by_type.get("Organization", 0) > 0


def test_timing_events_and_untyped_identifier() -> None:
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"},
            "identifier": [{"value": "cp-1"}],
            "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {
                "event": ["2022-01-01", "2022-02-01T09:30:00+01:00"]}}},
                {"detail": {"status": "scheduled", "scheduledString": "every morning"}}]}
    assert entries_of(plan, "activity-date") == [
        DateEntry("activity-date", "2022-01-01T00:00:00.000000", "2022-01-01T23:59:59.999999"),
        DateEntry("activity-date", "2022-02-01T08:30:00.000000", "2022-02-01T08:30:00.999999")]
    assert entries_of(plan, "identifier") == [TokenEntry("identifier", None, "cp-1")]


def test_generated_search_parameters_match_the_spec() -> None:
    from hearth.capability.generate_search import search_parameters

    generated = search_parameters(Path("/work/shared/spec/r4"))
    assert generated == json.loads((DATA / "search_parameters.json").read_text())
    assert len(generated) == 1375
    gender = next(p for p in generated if p["url"].endswith("/individual-gender"))
    assert set(gender["base"]) == {"Patient", "Practitioner", "Person", "RelatedPerson"} and gender["type"] == "token"
