"""Search query parsing (search/parse.py), compartments and paging cursors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl

import pytest

from hearth.capability.outcome import FhirError
from hearth.search.registry import default_registry
from hearth.search.compartments import compartment_clause
from hearth.search.ir import (ChainPred, Clause, CompositePred, HasPred, Include, Keyset, MissingPred, OfTypePred,
                       ReferencePred, SortKey, TokenTextPred)
from hearth.search.params import date, number, quantity, string, token, uri
from hearth.search.normalize import date_range
from hearth.search.paging import decode, encode, identity
from hearth.search.parse import canonical_query_string, parse_search

BASE = "http://hearth.test/fhir"
LOINC = "http://loinc.org"


class FakeTerminology:
    def expand(self, url):
        return {"http://vs/vitals": frozenset({(LOINC, "8480-6"), (LOINC, "8462-4")})}.get(url)

    def descendants(self, system, code):
        return frozenset({code, code + ".child"})

    def ancestors(self, system, code):
        return frozenset({code, code + ".parent"})


def parse(query: str, types=("Observation",), strict=True, terminology=FakeTerminology(), **kw):
    params = parse_qsl(query, keep_blank_values=True)
    options = dict(registry=default_registry(), strict=strict, default_count=20, max_count=100, base_url=BASE,
                   terminology=terminology)
    options.update(kw)
    return parse_search(tuple(types), params, **options)


def where(query: str, **kw) -> tuple[Clause, ...]:
    return parse(query, **kw).where


def preds(query: str, **kw) -> tuple:
    (clause,) = where(query, **kw)
    return clause.preds


def bad(query: str, types=("Observation",), strict=True, status=400, **kw) -> str:
    with pytest.raises(FhirError) as caught:
        parse(query, types=types, strict=strict, **kw)
    assert caught.value.status == status
    return caught.value.diagnostics


# --- parameter types ----------------------------------------------------------------------------------

def test_string_forms():
    assert preds("name=Jos%C3%A9  Mar%C3%ADa", types=("Patient",)) == (string.pred("jose maria"),)
    assert preds("name:exact=José", types=("Patient",)) == (string.pred("José", "exact"),)
    assert preds("name:contains=ARI", types=("Patient",)) == (string.pred("ari", "contains"),)


def test_token_forms():
    assert preds("code=1234-5") == (token.code(None, "1234-5"),)
    assert preds("code=http://loinc.org|1234-5") == (token.code(LOINC, "1234-5"),)
    assert preds("code=|1234-5") == (token.code("", "1234-5"),)
    assert preds("code=http://loinc.org|") == (token.code(LOINC, None),)
    assert preds("code:text=Blood  Pressure") == (TokenTextPred("blood pressure"),)
    assert preds("code:not=x") == (token.code(None, "x", negated=True),)
    assert preds("identifier:of-type=http://t|MR|123", types=("Patient",)) == (
        OfTypePred("http://t", "MR", "123"),)
    bad("code=a|b|c")
    bad("code=|")
    bad("identifier:of-type=http://t|MR", types=("Patient",))


def test_token_not_with_several_values_means_neither():
    assert where("code:not=a,b") == (Clause("code", "token", (token.code(None, "a", negated=True),)),
                                     Clause("code", "token", (token.code(None, "b", negated=True),)))


def test_token_terminology_modifiers():
    (pred,) = preds("code:in=http://vs/vitals")
    assert not pred.negated and set(pred.keys) == {(LOINC, "8480-6"), (LOINC, "8462-4")}
    assert preds("code:not-in=http://vs/vitals")[0].negated
    (below,) = preds("code:below=http://loinc.org|A")
    assert not below.negated and set(below.keys) == {(LOINC, "A"), (LOINC, "A.child")}
    (above,) = preds("code:above=http://loinc.org|A")
    assert set(above.keys) == {(LOINC, "A"), (LOINC, "A.parent")}
    assert "ValueSet" in bad("code:in=http://vs/unknown", strict=False)  # a bad value even when lenient
    bad("code:below=A")  # needs system|code
    assert "terminology" in bad("code:in=http://vs/vitals", terminology=None)
    assert parse("code:in=http://vs/vitals", strict=False, terminology=None).where == ()


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"])
def test_date_prefixes(prefix):
    assert preds(f"date={prefix}2020-03") == (date.pred(prefix, *date_range("2020-03")),)


def test_date_values():
    assert preds("date=2020") == (date.pred("eq", "2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999"),)
    assert preds("date=2020-03-04T10:00:00%2B02:00") == (
        date.pred("eq", "2020-03-04T08:00:00.000000", "2020-03-04T08:00:00.999999"),)
    # an unencoded '+' arrives as a space
    assert preds("date=ge2020-03-04T10:00:00+02:00") == (
        date.pred("ge", "2020-03-04T08:00:00.000000", "2020-03-04T08:00:00.999999"),)
    assert preds("date=2020-03-04T10:00Z") == (
        date.pred("eq", "2020-03-04T10:00:00.000000", "2020-03-04T10:00:59.999999"),)
    bad("date=notadate")
    bad("date=2020-13")
    assert "date" in bad("date=xx2020", strict=False)


def test_date_ap_is_widened_by_a_tenth_of_the_gap_to_now():
    (pred,) = preds("date=ap2000-01-01")
    ((below_hi, above_lo),) = pred.ranges  # ap: the entry's lo <= the search's hi and its hi >= the search's lo
    lo, hi = above_lo.operand, below_hi.operand
    assert pred == date.pred("ap", lo, hi)
    years = (datetime.now(timezone.utc).replace(tzinfo=None) - datetime(2000, 1, 1)).days / 365.25
    widened = datetime(2000, 1, 1) - datetime.fromisoformat(lo)
    assert abs(widened.days / 365.25 - years / 10) < 0.05
    assert datetime.fromisoformat(hi) > datetime(2000, 1, 2) + widened - timedelta(days=1)


def test_number_and_quantity():
    assert preds("probability=gt0.5", types=("RiskAssessment",)) == (number.pred("gt", 0.5, 0.45, 0.55),)
    assert preds("probability=100", types=("RiskAssessment",)) == (number.pred("eq", 100.0, 99.5, 100.5),)
    assert preds("probability=ap100", types=("RiskAssessment",)) == (number.pred("ap", 100.0, 90.0, 110.0),)
    assert preds("value-quantity=5.4") == (quantity.pred("eq", 5.4, 5.35, 5.45),)
    assert preds("value-quantity=le5.4|http://unitsofmeasure.org|mg") == (
        quantity.pred("le", 5.4, 5.35, 5.45, "http://unitsofmeasure.org", "mg"),)
    assert preds("value-quantity=5.4||mg") == (quantity.pred("eq", 5.4, 5.35, 5.45, "", "mg"),)
    bad("value-quantity=5.4|mg")
    bad("value-quantity=heavy")
    bad("probability=1,2,x", types=("RiskAssessment",))


def test_reference_forms():
    assert preds("subject=Patient/p1") == (ReferencePred("Patient", "p1"),)
    assert preds("subject=p1") == (ReferencePred(None, "p1"),)  # several target types: any
    assert preds("specimen=s1") == (ReferencePred("Specimen", "s1"),)  # one target type
    assert preds(f"subject={BASE}/Patient/p1") == (ReferencePred("Patient", "p1"),)  # own base: local
    assert preds("subject=http://other.org/fhir/Patient/p1") == (
        ReferencePred(url="http://other.org/fhir/Patient/p1"),)
    assert preds("subject:Patient=p1") == (ReferencePred("Patient", "p1"),)
    assert preds("subject:Patient=Patient/p1") == (ReferencePred("Patient", "p1"),)
    assert preds("subject:identifier=urn:mrn|M-7") == (
        ReferencePred(modifier="identifier", identifier_system="urn:mrn", identifier_value="M-7"),)
    assert preds("instantiates-canonical=http://x.org/PlanDefinition/p|2.0", types=("CarePlan",)) == (
        ReferencePred(url="http://x.org/PlanDefinition/p", version="2.0"),)
    bad("subject:Patient=Group/g1")
    assert "Organization" in bad("subject:Organization=o1")  # not a target of Observation.subject


def test_uri():
    assert preds("url=http://x.org/vs", types=("ValueSet",)) == (uri.pred("http://x.org/vs"),)
    assert preds("url:below=http://x.org/", types=("ValueSet",)) == (uri.pred("http://x.org/", "below"),)
    assert preds("url:above=http://x.org/a/b", types=("ValueSet",)) == (uri.pred("http://x.org/a/b", "above"),)


def test_composite():
    assert preds("component-code-value-quantity=http://loinc.org|8480-6$gt100") == (CompositePred((
        token.code(LOINC, "8480-6"), quantity.pred("gt", 100.0, 99.5, 100.5))),)
    assert preds("code-value-date=a$2020,b$2021")[1] == CompositePred((token.code(None, "b"),
                                                                        date.pred("eq", *date_range("2021"))))
    bad("component-code-value-quantity=http://loinc.org|8480-6")
    bad("component-code-value-quantity=x$y")


def test_missing_on_every_type():
    for query, types in [("name:missing=true", "Patient"), ("gender:missing=false", "Patient"),
                         ("birthdate:missing=true", "Patient"), ("value-quantity:missing=true", "Observation"),
                         ("subject:missing=true", "Observation"), ("url:missing=true", "ValueSet"),
                         ("probability:missing=false", "RiskAssessment"),
                         ("code-value-quantity:missing=true", "Observation")]:
        (pred,) = preds(query, types=(types,))
        assert pred == MissingPred(query.endswith("true"))
    bad("name:missing=maybe", types=("Patient",))


# --- OR, AND, escaping, empty values ------------------------------------------------------------------

def test_or_and():
    assert where("code=a,b&code=c") == (Clause("code", "token", (token.code(None, "a"), token.code(None, "b"))),
                                        Clause("code", "token", (token.code(None, "c"),)))


def test_escaping():
    assert preds(r"name=a\,b,c", types=("Patient",)) == (string.pred("a,b"), string.pred("c"))
    assert preds(r"code=http://x|a\|b") == (token.code("http://x", "a|b"),)
    assert preds(r"identifier=a\\b", types=("Patient",)) == (token.code(None, "a\\b"),)
    assert preds(r"code-value-string=c$x\$y", types=("Observation",)) == (
        CompositePred((token.code(None, "c"), string.pred("x$y"))),)


def test_empty_values_are_ignored():
    query = parse("code=&status=final,,")
    assert query.where == (Clause("status", "token", (token.code(None, "final"),)),)
    assert query.used == (("status", "final,,"),)


# --- special parameters -------------------------------------------------------------------------------

def test_resource_parameters():
    assert preds("_id=a,b") == (token.code(None, "a"), token.code(None, "b"))
    assert preds("_lastUpdated=gt2020") == (date.pred("gt", *date_range("2020")),)
    assert preds("_tag=urn:t|x") == (token.code("urn:t", "x"),)
    assert preds("_security=urn:s|R") == (token.code("urn:s", "R"),)
    assert preds("_profile=http://p") == (uri.pred("http://p"),)
    assert preds("_source=http://s") == (uri.pred("http://s"),)


def test_list_is_a_has_on_list_item():
    (clause,) = where("_list=l1")
    assert clause == Clause("_has", "special", (HasPred("List", "item", (
        Clause("_id", "token", (token.code(None, "l1"),)),)),))
    assert "functional" in bad("_list=$current-allergies")


# --- chains and _has ------------------------------------------------------------------------------

def test_chain_with_type():
    (clause,) = where("subject:Patient.name=peter,paul")
    assert clause == Clause("subject", "reference", (ChainPred(("Patient",), (
        Clause("name", "string", (string.pred("peter"), string.pred("paul"))),)),))


def test_chain_over_every_target_with_the_parameter():
    (clause,) = where("subject.name=peter")
    (chain,) = clause.preds
    assert set(chain.target_types) == {"Patient", "Location"}  # Group and Device have no `name`
    (clause,) = where("patient.birthdate=ge2000")
    born = Clause("birthdate", "date", (date.pred("ge", *date_range("2000")),), single_date=True)
    assert clause.preds == (ChainPred(("Patient",), (born,)),)


def test_chain_groups_targets_by_parameter_type():
    # Encounter.participant targets Practitioner, PractitionerRole, RelatedPerson; `identifier` is a token on all
    (clause,) = where("participant.identifier=x", types=("Encounter",))
    assert len(clause.preds) == 1 and len(clause.preds[0].target_types) == 3


def test_multi_level_chain_with_modifier_at_the_end():
    (clause,) = where("subject:Patient.organization.name:exact=Acme")
    inner = clause.preds[0].where[0]
    assert inner.param == "organization" and inner.preds == (ChainPred(("Organization",), (
        Clause("name", "string", (string.pred("Acme", "exact"),)),)),)


def test_chain_errors():
    assert "not a reference" in bad("code.name=x")
    assert "no target type" in bad("subject.nonexistent=x")
    assert parse("subject.nonexistent=x", strict=False).ignored


def test_has_and_nested_has():
    (clause,) = where("_has:Observation:patient:code=1234", types=("Patient",))
    assert clause == Clause("_has", "special", (HasPred("Observation", "patient", (
        Clause("code", "token", (token.code(None, "1234"),)),)),))
    (clause,) = where("_has:Observation:patient:_has:AuditEvent:entity:agent=Practitioner/x", types=("Patient",))
    inner = clause.preds[0].where[0]
    assert inner.preds[0].source_type == "AuditEvent" and inner.preds[0].where[0].param == "agent"
    assert "cannot refer" in bad("_has:Observation:patient:code=1", types=("Practitioner",))
    bad("_has:Observation:code:code=1", types=("Patient",))  # not a reference
    bad("_has:Nope:patient:code=1", types=("Patient",))


# --- result parameters --------------------------------------------------------------------------------

def test_sort():
    assert parse("_sort=-date,_id,code").sort == (SortKey("date", "date", True), SortKey("_id", "token"),
                                                  SortKey("code", "token"))
    bad("_sort=nope")
    query = parse("_sort=nope,-date", strict=False)
    assert query.sort == (SortKey("date", "date", True),) and query.used == (("_sort", "-date"),)
    assert query.ignored and "nope" in query.ignored[0]


def test_count_and_total():
    assert parse("").count == 20 and parse("").total == "none"
    assert parse("_count=5").count == 5
    assert parse("_count=1000").count == 100
    assert parse("_count=1000").used == (("_count", "100"),)
    query = parse("_count=0")
    assert query.count == 0 and query.total == "accurate"
    assert parse("_count=0&_total=none").total == "none"
    assert parse("_total=estimate").total == "estimate"
    for value in ("-1", "x", "1.5"):
        bad(f"_count={value}", strict=False)
    bad("_total=all", strict=False)


def test_summary_and_elements():
    query = parse("_summary=count")
    assert query.summary == "count" and query.count == 0 and query.total == "accurate"
    assert parse("_summary=text").summary == "text"
    bad("_summary=short", strict=False)
    assert parse("_elements=code, subject").elements == ("code", "subject")


def test_includes():
    query = parse("_include=Observation:subject:Patient&_include:iterate=Patient:general-practitioner"
                  "&_revinclude=Provenance:target&_include=*")
    assert query.includes == (Include("Observation", "subject", "Patient"),
                              Include("Patient", "general-practitioner", None, False, True),
                              Include("Provenance", "target", None, True),
                              Include("*", "*"))
    assert parse("_include:recurse=Observation:subject").includes[0].iterate
    bad("_include=Observation")
    bad("_include=Observation:code")
    assert parse("_include=Observation:code", strict=False).includes == ()


def test_type_for_system_search():
    query = parse("_type=Patient,Observation&_id=x", types=())
    assert query.types == ("Patient", "Observation") and query.where[0].param == "_id"
    assert bad("_type=Patient,Nope", types=(), strict=False)
    assert "code" in bad("code=x", types=())  # not a parameter of every type
    assert parse("_lastUpdated=gt2020", types=()).where[0].param == "_lastUpdated"
    assert "_type" in bad("_type=Patient")  # on a type-level search


def test_format_pretty_cursor():
    query = parse("_format=json&_pretty=true&_cursor=abc&status=final")
    assert query.cursor == "abc" and query.used == (("status", "final"),)


# --- strict and lenient -------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["foo=bar", "code:exact=x", "value-quantity:below=5", "date:exact=2020", "_text=x",
                                   "subject:above=x", "name:foo=x"])
def test_unsupported_parameters(query):
    assert query.split("=")[0] in bad(query)
    lenient = parse(query, strict=False)
    assert lenient.where == () and len(lenient.ignored) == 1 and lenient.used == ()


def test_lenient_keeps_the_rest():
    query = parse("foo=1&status=final&code:zz=2", strict=False)
    assert [c.param for c in query.where] == ["status"]
    assert [reason.split(":")[0] for reason in query.ignored] == ["foo=1", "code"]


def test_canonical_query_string():
    query = parse("status=final&foo=1&code=http://loinc.org|1%202&_count=500&_sort=-date", strict=False)
    assert canonical_query_string(query) == "status=final&code=http://loinc.org|1%202&_count=100&_sort=-date"


# --- compartments -------------------------------------------------------------------------------------

def test_compartment_errors():
    with pytest.raises(FhirError) as caught:
        compartment_clause("Observation", "1", "Patient")
    assert caught.value.status == 404
    with pytest.raises(FhirError) as caught:
        compartment_clause("Patient", "1", "Organization")
    assert caught.value.status == 400
    with pytest.raises(FhirError) as caught:
        compartment_clause("Patient", "1", "Nope")
    assert caught.value.status == 404
    params = {c.param for c in compartment_clause("Practitioner", "d", "Encounter").preds[0].clauses}
    assert params == {"practitioner", "participant"}


# --- cursors ------------------------------------------------------------------------------------------

def test_cursor_round_trip_and_tampering():
    values = ("2020-01-01T00:00:00.000000", 1.5, None, 3, True)
    key = b"a database's secret"
    cursor = encode(Keyset(values, "next"), "search", key=key)
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert decode(cursor, "search", key=key) == Keyset(values, "next")
    assert decode(encode(Keyset((), "prev"), "s", key=key), "s", key=key) == Keyset((), "prev")
    for broken in (cursor[:-1] + ("A" if cursor[-1] != "A" else "B"), cursor[4:], "", "%%%", "é"):
        with pytest.raises(FhirError) as caught:
            decode(broken, "search", key=key)
        assert caught.value.status == 400
    with pytest.raises(FhirError):
        decode(encode(Keyset(values), "search", key=b"other"), "search", key=key)
    with pytest.raises(FhirError) as caught:  # a cursor of another search
        decode(cursor, "another search", key=key)
    assert "does not belong to this search" in caught.value.diagnostics
    with pytest.raises(TypeError):
        encode(Keyset((object(),)), "s", key=key)


def test_a_cursor_names_its_search():
    """What the cursor's search is: its types, sort and matching parameters as written, and its scope; not the
    page's shape."""
    def named(query: str, types=("Observation",), scope: str = "") -> str:
        return identity(parse(query, types), scope)
    base = named("code=a&date=ge2020&_sort=date")
    assert named("date=ge2020&code=a&_sort=date&_count=5&_include=Observation:subject&_total=accurate") == base
    for other in ("code=b&date=ge2020&_sort=date", "code=a&date=ge2020&_sort=-date", "code=a&date=ge2020"):
        assert named(other) != base, other
    assert named("code=a&date=ge2020&_sort=date", ("DiagnosticReport",)) != base
    assert named("code=a&date=ge2020&_sort=date", scope="Patient/1/Observation") != base
    assert named("date=ap2020") == named("date=ap2020")  # an `ap` range moves with the clock; its name does not
