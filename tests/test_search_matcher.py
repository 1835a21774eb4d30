"""The in-memory matcher (search/matcher.py): the semantics every backend must reproduce."""

from __future__ import annotations

import bz2
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from hearth.search.registry import default_registry
from hearth.search.compartments import compartment_clause
from hearth.search.entries import (MAX_INSTANT, CompositeEntry, DateEntry, NumberEntry, QuantityEntry, ReferenceEntry,
                            StringEntry, TokenEntry, UriEntry)
from hearth.capability.terminology import Terminology
from hearth.search.extract import extract
from hearth.search.ir import (ChainPred, Clause, CompositePred, HasPred, MissingPred, NumberPred, OfTypePred, ReferencePred,
                       TokenPred, TokenTextPred)
from hearth.search.params import date, number, quantity, string, token, uri
from hearth.search.matcher import Prepared, amatches, compile_matcher, matches
from hearth.search.normalize import date_range, number_range
from hearth.search.parse import parse_search

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def match(clauses, entries, resource_id="1", resource_type="Observation", resolver=None) -> bool:
    return matches(tuple(clauses), entries, resource_id=resource_id, resource_type=resource_type, resolver=resolver)


def one(param, param_type, *preds) -> Clause:
    return Clause(param, param_type, preds)


# --- date -------------------------------------------------------------------------------------------

def date_entry(value: str, end: str | None = None) -> DateEntry:
    lo = date_range(value)[0]
    hi = MAX_INSTANT if end == "open" else date_range(end or value)[1]
    return DateEntry("date", lo, hi)


# search value 2020-06 = [2020-06-01T00:00, 2020-06-30T23:59:59.999999]; expected: eq ne gt lt ge le sa eb ap
DATE_TABLE = [
    (date_entry("2020-06-15"), "T F F F T T F F T"),  # inside the search range
    (date_entry("2020-06"), "T F F F T T F F T"),  # the same range
    (date_entry("2020"), "F T T T T T F F T"),  # wider on both sides
    (date_entry("2020-07-01"), "F T T F T F T F F"),  # after
    (date_entry("2020-05-31T23:59:59Z"), "F T F T F T F T F"),  # before (a second's range)
    (date_entry("2020-05-15", "2020-06-15"), "F T F T F T F F T"),  # period starting before
    (date_entry("2020-06-10", "open"), "F T T F T F F F T"),  # period without an end
    (date_entry("2020-06-30T23:59:59.999999Z"), "T F F F T T F F T"),  # last microsecond inside
    (date_entry("2020-07-01T01:30:00+02:00"), "T F F F T T F F T"),  # 2020-06-30T23:30Z: the zone counts
    (date_entry("2020-06-30T23:30:00-02:00"), "F T T F T F T F F"),  # 2020-07-01T01:30Z
]


@pytest.mark.parametrize("entry,expected", DATE_TABLE)
def test_date_prefixes_against_ranges(entry, expected):
    lo, hi = date_range("2020-06")
    got = " ".join("T" if match([one("date", "date", date.pred(p, lo, hi))], [entry]) else "F" for p in PREFIXES)
    assert got == expected


def test_date_any_entry_matches():
    lo, hi = date_range("2021")
    entries = [date_entry("2020-01-01"), date_entry("2021-03-04")]
    assert match([one("date", "date", date.pred("eq", lo, hi))], entries)
    assert not match([one("date", "date", date.pred("eq", lo, hi))], entries[:1])


# --- number and quantity ---------------------------------------------------------------------------

def number_entry(text: str) -> NumberEntry:
    return NumberEntry("n", *number_range(text))


def number_pred(prefix: str, text: str) -> NumberPred:
    return number.pred(prefix, *number_range(text))


# search value 100 = [99.5, 100.5); expected: eq ne gt lt ge le sa eb
NUMBER_TABLE = [
    ("100", "T F F F T T F F"),
    ("100.4", "T F T F T F F F"),
    ("99.5", "T F F T F T F F"),
    ("100.5", "F T T F T F T F"),
    ("99.4", "F T F T F T F T"),
    ("1e2", "T F F F T T F F"),
]


@pytest.mark.parametrize("value,expected", NUMBER_TABLE)
def test_number_prefixes(value, expected):
    got = " ".join("T" if match([one("n", "number", number_pred(p, "100"))], [number_entry(value)]) else "F"
                   for p in PREFIXES[:-1])
    assert got == expected


def test_number_precision_of_the_search_value():
    assert match([one("n", "number", number_pred("eq", "100.00"))], [number_entry("100.004")])
    assert not match([one("n", "number", number_pred("eq", "100.00"))], [number_entry("100.006")])
    assert match([one("n", "number", number_pred("eq", "1e2"))], [number_entry("140")])  # one significant digit


def quantity_entry(value: str, system: str | None, code: str | None, unit: str | None = None) -> QuantityEntry:
    return QuantityEntry("q", *number_range(value), system, code, unit)


@pytest.mark.parametrize("pred,expected", [
    (quantity.pred("eq", *number_range("5.4")), "T T T"),
    (quantity.pred("eq", *number_range("5.4"), "http://unitsofmeasure.org", "mg"), "T F F"),
    (quantity.pred("eq", *number_range("5.4"), "", "mg"), "T F T"),  # 5.4||mg: code or unit
    (quantity.pred("eq", *number_range("5.4"), "http://unitsofmeasure.org", None), "T F F"),
    (quantity.pred("gt", *number_range("5"), "", "mg"), "T F T"),
    (quantity.pred("lt", *number_range("5"), "", "mg"), "F F F"),
])
def test_quantity_units(pred, expected):
    entries = [quantity_entry("5.4", "http://unitsofmeasure.org", "mg"),
               quantity_entry("5.4", "http://other", "MG"),
               quantity_entry("5.40", None, None, "mg")]
    got = " ".join("T" if match([one("q", "quantity", pred)], [entry]) else "F" for entry in entries)
    assert got == expected


# --- token ----------------------------------------------------------------------------------------

LOINC = "http://loinc.org"
TOKENS = [TokenEntry("code", LOINC, "1234-5", "body weight"), TokenEntry("code", None, "abc")]


@pytest.mark.parametrize("pred,expected", [
    (token.code(None, "1234-5"), True),
    (token.code(LOINC, "1234-5"), True),
    (token.code("", "1234-5"), False),  # |code: no system
    (token.code("", "abc"), True),
    (token.code(LOINC, None), True),  # system|
    (token.code("http://other", None), False),
    (token.code(LOINC, "abc"), False),
    (token.code(None, "1234-5", negated=True), False),
    (token.code(None, "zzz", negated=True), True),
    (TokenTextPred("body"), True),  # :text starts-with on normalised text
    (TokenTextPred("weight"), False),
    (TokenPred(((LOINC, "1234-5"), (LOINC, "x"))), True),
    (TokenPred(((None, "abc"),)), True),  # (None, code): any system
    (TokenPred((("http://other", "abc"),)), False),
    (TokenPred(((LOINC, "1234-5"),), negated=True), False),
    (TokenPred(((LOINC, "nope"),), negated=True), True),
    (TokenPred(((LOINC, "1000-0"), (LOINC, "1234-5"))), True),
])
def test_token_forms(pred, expected):
    assert match([one("code", "token", pred)], TOKENS) is expected


def test_token_not_matches_resources_without_the_element():
    assert match([one("code", "token", token.code(None, "x", negated=True))], [])
    assert not match([one("code", "token", token.code(None, "x"))], [])


def test_token_of_type():
    entry = TokenEntry("identifier", "urn:mrn", "123", None, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR")
    of_type = OfTypePred("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "123")
    assert match([one("identifier", "token", of_type)], [entry])
    v2 = of_type.type_system
    assert not match([one("identifier", "token", OfTypePred(v2, "MR", "124"))], [entry])
    assert not match([one("identifier", "token", OfTypePred(v2, "DL", "123"))], [entry])


def test_id_comes_from_the_resource_id():
    assert match([one("_id", "token", token.code(None, "a"), token.code(None, "b"))], [], resource_id="b")
    assert not match([one("_id", "token", token.code(None, "a"))], [], resource_id="b")


# --- string, uri ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,expected", [
    (string.pred("jose"), True), (string.pred("jose maria"), True), (string.pred("maria"), False),
    (string.pred("maria", "contains"), True), (string.pred("se ma", "contains"), True),
    (string.pred("José María", "exact"), True), (string.pred("jose maria", "exact"), False),
    (string.pred("José", "exact"), False),
])
def test_string_forms(pred, expected):
    assert match([one("name", "string", pred)], [StringEntry("name", "jose maria", "José María")]) is expected


@pytest.mark.parametrize("pred,expected", [
    (uri.pred("http://acme.org/fhir/ValueSet/123"), True),
    (uri.pred("http://acme.org/fhir/ValueSet"), False),
    (uri.pred("http://acme.org/fhir/", "below"), True),
    (uri.pred("http://other.org/", "below"), False),
    (uri.pred("http://acme.org/fhir/ValueSet/123/_history/5", "above"), True),
    (uri.pred("http://acme.org/", "above"), False),
])
def test_uri_forms(pred, expected):
    assert match([one("url", "uri", pred)], [UriEntry("url", "http://acme.org/fhir/ValueSet/123")]) is expected


# --- reference ------------------------------------------------------------------------------------

REFERENCES = [
    ReferenceEntry("subject", "Patient", "p1"),
    ReferenceEntry("subject", "Patient", "p9", "http://other.org/fhir/Patient/p9"),
    ReferenceEntry("subject", None, None, "http://example.org/Questionnaire/q", "2.0"),
    ReferenceEntry("subject", None, None, None, None, "urn:mrn", "M-7"),
]


@pytest.mark.parametrize("pred,expected", [
    (ReferencePred("Patient", "p1"), True),
    (ReferencePred(None, "p1"), True),  # an id alone: any type
    (ReferencePred("Group", "p1"), False),
    (ReferencePred("Patient", "p9"), False),  # p9 lives on another server
    (ReferencePred(url="http://other.org/fhir/Patient/p9"), True),
    (ReferencePred(url="http://example.org/Questionnaire/q"), True),  # canonical, any version
    (ReferencePred(url="http://example.org/Questionnaire/q", version="2.0"), True),
    (ReferencePred(url="http://example.org/Questionnaire/q", version="1.0"), False),
    (ReferencePred(modifier="identifier", identifier_system="urn:mrn", identifier_value="M-7"), True),
    (ReferencePred(modifier="identifier", identifier_value="M-7"), True),
    (ReferencePred(modifier="identifier", identifier_system="", identifier_value="M-7"), False),
    (ReferencePred(modifier="identifier", identifier_system="urn:other", identifier_value="M-7"), False),
])
def test_reference_forms(pred, expected):
    assert match([one("subject", "reference", pred)], REFERENCES) is expected


# --- composite, missing, AND / OR -----------------------------------------------------------------

def test_composite_matches_within_one_repetition():
    def component(code, value):
        return CompositeEntry("ccvq", (TokenEntry("code", LOINC, code), quantity_entry(value, None, None)))

    entries = [component("8480-6", "120"), component("8462-4", "80")]
    systolic_high = CompositePred((token.code(LOINC, "8480-6"), quantity.pred("gt", *number_range("100"))))
    diastolic_high = CompositePred((token.code(LOINC, "8462-4"), quantity.pred("gt", *number_range("100"))))
    assert match([one("ccvq", "composite", systolic_high)], entries)
    assert not match([one("ccvq", "composite", diastolic_high)], entries)  # 120 belongs to the other component
    assert match([one("ccvq", "composite", diastolic_high, systolic_high)], entries)


def test_missing():
    entries = [StringEntry("name", "x", "x")]
    assert match([one("name", "string", MissingPred(False))], entries)
    assert not match([one("name", "string", MissingPred(True))], entries)
    assert match([one("birthdate", "date", MissingPred(True))], entries)


def test_clauses_and_preds_are_and_of_or():
    entries = TOKENS + [StringEntry("name", "ann", "Ann")]
    code_or = one("code", "token", token.code(None, "zzz"), token.code(None, "abc"))
    assert match([code_or, one("name", "string", string.pred("an"))], entries)
    assert not match([code_or, one("name", "string", string.pred("bo"))], entries)


def test_compartment_clause():
    clause = compartment_clause("Patient", "p1", "Observation")
    assert match([clause], [ReferenceEntry("performer", "Patient", "p1")])
    assert match([clause], [ReferenceEntry("subject", "Patient", "p1")])
    assert not match([clause], [ReferenceEntry("subject", "Patient", "p2")])
    itself = compartment_clause("Patient", "p1", "Patient")
    assert match([itself], [], resource_id="p1", resource_type="Patient")
    assert match([itself], [ReferenceEntry("link", "Patient", "p1")], resource_id="p3", resource_type="Patient")
    assert not match([itself], [], resource_id="p3", resource_type="Patient")


# --- chains and _has through a resolver -----------------------------------------------------------

class MemoryResolver:
    """A store of entries by (type, id), answering with the matcher itself (so chains nest)."""

    def __init__(self, resources: dict[tuple[str, str], list]) -> None:
        self.resources = resources
        self.calls = 0

    def __call__(self, types, where) -> bool:
        self.calls += 1
        return any(matches(where, entries, resource_id=rid, resource_type=rtype, resolver=self)
                   for (rtype, rid), entries in self.resources.items() if rtype in types)


RESOURCES = {
    ("Patient", "p1"): [StringEntry("name", "peter pan", "Peter Pan"),
                        ReferenceEntry("organization", "Organization", "o1")],
    ("Patient", "p2"): [StringEntry("name", "wendy", "Wendy")],
    ("Organization", "o1"): [StringEntry("name", "neverland clinic", "Neverland Clinic")],
    ("Observation", "obs1"): [ReferenceEntry("subject", "Patient", "p1"), TokenEntry("code", LOINC, "1234-5")],
}


def chain(param, types, *where) -> Clause:
    return Clause(param, "reference", (ChainPred(types, tuple(where)),))


def test_chain_single_and_multi_level():
    resolver = MemoryResolver(RESOURCES)
    by_name = chain("subject", ("Patient",), one("name", "string", string.pred("peter")))
    assert match([by_name], RESOURCES[("Observation", "obs1")], resolver=resolver)
    assert not match([chain("subject", ("Patient",), one("name", "string", string.pred("wendy")))],
                     RESOURCES[("Observation", "obs1")], resolver=resolver)
    two_levels = chain("subject", ("Patient",),
                       chain("organization", ("Organization",), one("name", "string", string.pred("never"))))
    assert match([two_levels], RESOURCES[("Observation", "obs1")], resolver=resolver)
    assert not match([chain("subject", ("Group",), one("name", "string", string.pred("peter")))],
                     RESOURCES[("Observation", "obs1")], resolver=resolver)


def test_local_clauses_run_before_the_resolver():
    resolver = MemoryResolver(RESOURCES)
    by_name = chain("subject", ("Patient",), one("name", "string", string.pred("peter")))
    assert not match([by_name, one("code", "token", token.code(None, "other"))], RESOURCES[("Observation", "obs1")],
                     resolver=resolver)
    assert resolver.calls == 0


def test_has():
    resolver = MemoryResolver(RESOURCES)
    coded = one("code", "token", token.code(None, "1234-5"))
    has = Clause("_has", "special", (HasPred("Observation", "subject", (coded,)),))
    assert match([has], RESOURCES[("Patient", "p1")], resource_id="p1", resource_type="Patient", resolver=resolver)
    assert not match([has], RESOURCES[("Patient", "p2")], resource_id="p2", resource_type="Patient", resolver=resolver)


def test_chain_needs_a_resolver():
    with pytest.raises(ValueError):
        match([chain("subject", ("Patient",), one("name", "string", string.pred("peter")))],
              RESOURCES[("Observation", "obs1")])


async def test_async_resolver():
    sync = MemoryResolver(RESOURCES)

    async def resolver(types, where):
        return sync(types, where)

    by_name = chain("subject", ("Patient",), one("name", "string", string.pred("pet")))
    assert await amatches((by_name,), RESOURCES[("Observation", "obs1")], resource_id="obs1",
                          resource_type="Observation", resolver=resolver)
    with pytest.raises(TypeError):
        match([by_name], RESOURCES[("Observation", "obs1")], resolver=resolver)


# --- end to end: extract -> parse -> match ---------------------------------------------------------

OBSERVATION = {
    "resourceType": "Observation", "id": "bp", "status": "final",
    "meta": {"lastUpdated": "2024-03-01T10:00:00.000Z", "tag": [{"system": "urn:t", "code": "demo"}]},
    "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2024-02-29T08:30:00+01:00",
    "component": [
        {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
         "valueQuantity": {"value": 128, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
         "valueQuantity": {"value": 82, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
    ],
}


def query_matches(query_string: str, resource: dict = OBSERVATION) -> bool:
    params = [tuple(part.split("=", 1)) for part in query_string.split("&")]
    query = parse_search((resource["resourceType"],), params, registry=default_registry(), strict=True,
                         default_count=20, max_count=100, base_url="http://hearth.test/fhir")
    return matches(query.where, extract(resource, default_registry()), resource_id=resource["id"],
                   resource_type=resource["resourceType"])


@pytest.mark.parametrize("query,expected", [
    ("code=http://loinc.org|85354-9", True),
    ("code=85354-9&status=final", True),
    ("code=85354-9&status=amended", False),
    ("date=2024-02-29", True),
    ("date=2024-02-29T07:30:00Z", True),  # 08:30+01:00, minute precision covers it
    ("date=lt2024-02-29T07:00:00Z", False),
    ("date=ge2024-02", True),
    ("component-code-value-quantity=http://loinc.org|8480-6$gt120", True),
    ("component-code-value-quantity=http://loinc.org|8462-4$gt120", False),
    ("component-value-quantity=128|http://unitsofmeasure.org|mm[Hg]", True),
    ("component-value-quantity=128||mmHg", True),
    ("subject=Patient/p1", True),
    ("subject=http://hearth.test/fhir/Patient/p1", True),
    ("patient=p1", True),
    ("subject=Patient/p2", False),
    ("_tag=urn:t|demo&_lastUpdated=2024-03-01", True),
    ("code:text=blood", True),
    ("value-quantity:missing=true&code:not=1234", True),
])
def test_end_to_end(query, expected):
    assert query_matches(query) is expected


CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
             "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "relapse"}]}}


@pytest.mark.parametrize("query,expected", [
    ("clinical-status:in=http://hl7.org/fhir/ValueSet/condition-clinical", True),
    ("clinical-status:not-in=http://hl7.org/fhir/ValueSet/condition-clinical", False),
    (f"clinical-status:below={CLINICAL}|active", True),  # relapse is-a active
    (f"clinical-status:below={CLINICAL}|inactive", False),
    (f"clinical-status:above={CLINICAL}|relapse", True),  # the code itself
    (f"clinical-status:above={CLINICAL}|active", False),  # relapse is below active, not above
])
def test_end_to_end_terminology(query, expected):
    params = [tuple(query.split("=", 1))]
    parsed = parse_search(("Condition",), params, registry=default_registry(), strict=True, default_count=20,
                          max_count=100, base_url="http://hearth.test/fhir", terminology=Terminology.load())
    assert matches(parsed.where, extract(CONDITION, default_registry()), resource_id="c1", resource_type="Condition") is expected


def test_list_through_has():
    resolver = MemoryResolver({("List", "l1"): [ReferenceEntry("item", "Patient", "p1")],
                               ("List", "l2"): [ReferenceEntry("item", "Patient", "p2")]})
    query = parse_search(("Patient",), [("_list", "l1")], registry=default_registry(), strict=True,
                         default_count=20, max_count=100, base_url="http://hearth.test/fhir")
    assert match(query.where, [], resource_id="p1", resource_type="Patient", resolver=resolver)
    assert not match(query.where, [], resource_id="p2", resource_type="Patient", resolver=resolver)


# --- many subscriptions on one write (speed is measured by bench/, not asserted here) ----------------------

def test_thousand_matchers_share_one_prepared_resource():
    entries = extract(OBSERVATION, default_registry())
    matchers = [compile_matcher((one("code", "token", token.code(LOINC, f"{i}-0")),)) for i in range(999)]
    matchers.append(compile_matcher((one("code", "token", token.code(LOINC, "85354-9")),)))
    prepared = Prepared(entries, "Observation", "bp")
    assert [m for m in matchers if m(prepared)] == [matchers[-1]]


# --- Synthea: the matcher agrees with plain Python over real Observations ------------------------------

SYNTHEA_BUNDLE = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "synthea-120" / \
    "23275f24-df5a-6bcf-17cc-ff6507270b1c.json.bz2"


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def _codes(concept: dict) -> set[tuple[str, str]]:
    return {(c.get("system"), c.get("code")) for c in concept.get("coding", [])}


def test_synthea_observations_agree_with_python():
    bundle = json.loads(bz2.decompress(SYNTHEA_BUNDLE.read_bytes()))
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(observations) > 100
    expectations = {
        "code=http://loinc.org|8302-2": lambda o: (LOINC, "8302-2") in _codes(o["code"]),
        "date=ge2015&date=lt2018": lambda o: datetime(2015, 1, 1, tzinfo=timezone.utc)
        <= _utc(o["effectiveDateTime"]) < datetime(2018, 1, 1, tzinfo=timezone.utc),
        "value-quantity=gt100": lambda o: o.get("valueQuantity", {}).get("value", 0) > 100,
        "component-code-value-quantity=http://loinc.org|8480-6$ge120": lambda o: any(
            (LOINC, "8480-6") in _codes(c["code"]) and c.get("valueQuantity", {}).get("value", 0) >= 120
            for c in o.get("component", [])),
        "category=vital-signs&code:not=http://loinc.org|8302-2": lambda o: (
            "vital-signs" in {code for cat in o.get("category", []) for _, code in _codes(cat)}
            and (LOINC, "8302-2") not in _codes(o["code"])),
    }
    for query_string, expected in expectations.items():
        got = [query_matches(query_string, o) for o in observations]
        assert got == [expected(o) for o in observations], query_string
        assert any(got), query_string  # the query is not trivially empty on this bundle
