"""Search on each store (SQLite, MongoDB): every predicate agrees with the in-memory matcher on hand-built
entries; chains, _has, sorting, keyset paging both ways, totals, includes and system search."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from hearth.search.entries import (CompositeEntry, DateEntry, NumberEntry, QuantityEntry, ReferenceEntry, StringEntry,
                            TokenEntry, UriEntry)
from hearth.search.ir import (AnyOfPred, ChainPred, Clause, CompositePred, HasPred, Include, Keyset, MissingPred, OfTypePred,
                       Query, ReferencePred, SortKey, TokenPred, TokenTextPred)
from hearth.search.paging import places
from hearth.search.params import date, number, quantity, string, token, uri
from hearth.search.matcher import matches
from hearth.storage.base import Write
from test_store_contract import store  # noqa: F401  (the fixture: each backend)

LOINC = "http://loinc.org"
DAY = ("2020-03-04T00:00:00.000000", "2020-03-04T23:59:59.999999")
MONTH = ("2020-03-01T00:00:00.000000", "2020-03-31T23:59:59.999999")
YEAR = ("2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999")
OPEN = ("2019-06-01T00:00:00.000000", "9999-12-31T23:59:59.999999")
NOON = ("2020-03-04T12:00:00.000000", "2020-03-04T12:00:00.000000")


def bp(system: str, code: str, value: float, unit: str) -> QuantityEntry:
    return QuantityEntry("value-quantity", value, value - 0.5, value + 0.5, system, code, unit)


OBSERVATIONS = {
    "o1": [TokenEntry("code", LOINC, "8310-5", "body temperature"), DateEntry("date", *DAY),
           bp("http://unitsofmeasure.org", "Cel", 37.0, "C"), ReferenceEntry("subject", "Patient", "p1"),
           StringEntry("note", "fever noted", "Fever noted"), NumberEntry("probability", 0.25, 0.245, 0.255),
           CompositeEntry("code-value-quantity", (TokenEntry("code", LOINC, "8310-5"),
                                                  bp("http://unitsofmeasure.org", "Cel", 37.0, "C"))),
           UriEntry("instantiates", "http://example.org/fhir/Questionnaire/temp"),
           CompositeEntry("code-value-date", (TokenEntry("code", LOINC, "8310-5"), DateEntry("value-date", *DAY))),
           CompositeEntry("code-value-string", (TokenEntry("code", LOINC, "8310-5"),
                                                StringEntry("value-string", "high", "High")))],
    "o2": [TokenEntry("code", LOINC, "8867-4", "heart rate"), TokenEntry("code", None, "hr"),
           DateEntry("date", *MONTH), bp("http://unitsofmeasure.org", "/min", 80.0, "beats/minute"),
           ReferenceEntry("subject", "Patient", "p2"), NumberEntry("probability", 100.0, 99.5, 100.5),
           CompositeEntry("code-value-quantity", (TokenEntry("code", LOINC, "8867-4"),
                                                  bp("http://unitsofmeasure.org", "/min", 80.0, "beats/minute")))],
    "o3": [TokenEntry("code", "http://snomed.info/sct", "8310-5"), DateEntry("date", *OPEN),
           QuantityEntry("value-quantity", 37.2, 37.15, 37.25, None, None, "Cel"),
           ReferenceEntry("subject", "Group", "g1"),
           ReferenceEntry("based-on", None, None, "http://other.org/fhir/CarePlan/9"),
           StringEntry("note", "Ünïcode café", "Ünïcode café"),
           UriEntry("instantiates", "http://example.org/fhir/Questionnaire"),
           CompositeEntry("code-value-date", (TokenEntry("code", None, "8310-5"), DateEntry("value-date", *MONTH))),
           CompositeEntry("code-value-string", (TokenEntry("code", LOINC, "x"),
                                                StringEntry("value-string", "higher up", "Higher up")))],
    "o4": [TokenEntry("identifier", "urn:sys", "A-1", None, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
           DateEntry("date", *NOON), ReferenceEntry("subject", None, None, None, None, "urn:ssn", "123"),
           ReferenceEntry("instantiates-canonical", None, None, "http://example.org/PlanDefinition/x", "2.0")],
}
PATIENTS = {
    "p1": [StringEntry("name", "peter", "Peter"), StringEntry("name", "chalmers", "Chalmers"),
           TokenEntry("gender", "http://hl7.org/fhir/administrative-gender", "male"),
           ReferenceEntry("general-practitioner", "Practitioner", "dr1"), DateEntry("birthdate", *YEAR)],
    "p2": [StringEntry("name", "petra", "Petra"), TokenEntry("gender", "http://hl7.org/fhir/administrative-gender",
                                                             "female"),
           ReferenceEntry("general-practitioner", "Practitioner", "dr2"), DateEntry("birthdate", *DAY)],
    "p3": [StringEntry("name", "anne", "Anne")],
}
PRACTITIONERS = {"dr1": [StringEntry("name", "watson", "Watson")], "dr2": [StringEntry("name", "house", "House")]}
ALL = {**{("Observation", k): v for k, v in OBSERVATIONS.items()}, **{("Patient", k): v for k, v in PATIENTS.items()},
       **{("Practitioner", k): v for k, v in PRACTITIONERS.items()}}
UPDATED = {key: datetime(2024, 1, n + 1, tzinfo=timezone.utc) for n, key in enumerate(sorted(ALL))}


def entries_of(key: tuple[str, str]) -> list:
    updated = UPDATED[key].strftime("%Y-%m-%dT%H:%M:%S.%f")
    return [*ALL[key], DateEntry("_lastUpdated", updated, updated)]  # what the matcher sees for _lastUpdated


@pytest.fixture
async def loaded(store):  # noqa: F811
    for key in sorted(ALL):
        body = f'{{"resourceType":"{key[0]}","id":"{key[1]}"}}'.encode()
        await store.commit([Write(key[0], key[1], 1, UPDATED[key], body, tuple(ALL[key]), 0, "create")])
    return store


async def ids(store, resource_type: str, *clauses: Clause, **options) -> list[str]:
    page = await store.search(Query((resource_type,), tuple(clauses), **options))
    return [v.id for v in page.matches]


def clause(param: str, param_type: str, *preds) -> Clause:
    return Clause(param, param_type, preds)


Q = "http://unitsofmeasure.org"
CASES = [
    clause("code", "token", token.code(None, "8310-5")),
    clause("code", "token", token.code(LOINC, "8310-5")),
    clause("code", "token", token.code("", "hr")),
    clause("code", "token", token.code(LOINC, None)),
    clause("code", "token", token.code(None, "8310-5", negated=True)),
    clause("code", "token", token.code(LOINC, "8867-4", negated=True)),
    clause("code", "token", TokenPred(((LOINC, "8867-4"), (None, "x"), ("", "hr")))),
    clause("code", "token", TokenPred(((LOINC, "8310-5"),), negated=True)),
    clause("code", "token", TokenTextPred("body temp")),
    clause("identifier", "token", OfTypePred("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "A-1")),
    clause("identifier", "token", OfTypePred("http://terminology.hl7.org/CodeSystem/v2-0203", "XX", "A-1")),
    clause("code", "token", token.code(None, "8310-5"), token.code(None, "hr")),
    clause("note", "string", string.pred("fev")),
    clause("note", "string", string.pred("unicode")),
    clause("note", "string", string.pred("noted", "contains")),
    clause("note", "string", string.pred("Fever noted", "exact")),
    clause("note", "string", string.pred("fever noted", "exact")),
    clause("note", "string", string.pred("a.b", "contains")),
    *(clause("date", "date", date.pred(prefix, *value))
      for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
      for value in (DAY, MONTH, NOON, ("2021-01-01T00:00:00.000000", "2021-01-01T23:59:59.999999"))),
    *(clause("probability", "number", number.pred(prefix, 100.0, 99.5, 100.5))
      for prefix in ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")),
    clause("probability", "number", number.pred("eq", 0.25, 0.245, 0.255)),
    *(clause("value-quantity", "quantity", quantity.pred(prefix, 37.0, 36.95, 37.05, *units))
      for prefix in ("eq", "gt", "lt", "ge", "le", "ap", "ne")
      for units in ((None, None), (Q, "Cel"), ("", "Cel"), (None, "C"), (Q, None), ("", "beats/minute"))),
    clause("subject", "reference", ReferencePred("Patient", "p1")),
    clause("subject", "reference", ReferencePred(None, "g1")),
    clause("subject", "reference", ReferencePred("Patient", "g1")),
    clause("based-on", "reference", ReferencePred(url="http://other.org/fhir/CarePlan/9")),
    clause("based-on", "reference", ReferencePred("CarePlan", "9")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://example.org/PlanDefinition/x")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://example.org/PlanDefinition/x",
                                                                version="2.0")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://example.org/PlanDefinition/x",
                                                                version="1.0")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_system="urn:ssn",
                                                 identifier_value="123")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_value="123")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_system="urn:x",
                                                 identifier_value="123")),
    clause("instantiates", "uri", uri.pred("http://example.org/fhir/Questionnaire")),
    clause("instantiates", "uri", uri.pred("http://example.org/fhir/Questionnaire/temp/extra", "above")),
    clause("instantiates", "uri", uri.pred("http://example.org/fhir/Questionnaire", "below")),
    clause("code-value-quantity", "composite", CompositePred((token.code(LOINC, "8310-5"),
                                                              quantity.pred("gt", 36.0, 35.5, 36.5)))),
    clause("code-value-quantity", "composite", CompositePred((token.code(LOINC, "8310-5"),
                                                              quantity.pred("gt", 38.0, 37.5, 38.5)))),
    clause("code-value-quantity", "composite", CompositePred((token.code(LOINC, "8867-4"),))),
    clause("code-value-quantity", "composite",  # two values: either pair, each on one entry
           CompositePred((token.code(None, "8867-4"), quantity.pred("lt", 90.0, 89.5, 90.5))),
           CompositePred((TokenPred(((LOINC, "8310-5"), (LOINC, "x"))), quantity.pred("ge", 37.0, 36.95, 37.05, Q,
                                                                                     "Cel")))),
    *(clause("code-value-date", "composite", CompositePred((token.code(LOINC, "8310-5"), date.pred(prefix, *DAY))))
      for prefix in ("eq", "ne", "gt", "le", "ap")),
    clause("code-value-date", "composite", CompositePred((token.code(None, "8310-5"), date.pred("eq", *MONTH)))),
    clause("code-value-string", "composite", CompositePred((token.code(None, None), string.pred("High")))),
    clause("code-value-string", "composite", CompositePred((TokenPred(((LOINC, None),)),
                                                            string.pred("high", "exact")))),
    clause("code-value-string", "composite", CompositePred((token.code(LOINC, "x"), string.pred("her", "contains")))),
    clause("code-value-quantity", "composite",
           CompositePred((token.code(None, "8867-4"), quantity.pred("gt", 90.0, 89.5, 90.5))),
           CompositePred((token.code(LOINC, "8310-5"), quantity.pred("ge", 37.0, 36.95, 37.05, Q, "/min")))),
    clause("note", "string", MissingPred(True)),
    clause("note", "string", MissingPred(False)),
    clause("code-value-quantity", "composite", MissingPred(True)),
    clause("_id", "token", token.code(None, "o2"), token.code(None, "o3")),
    clause("_id", "token", token.code(None, "o2", negated=True)),
    clause("_lastUpdated", "date", date.pred("gt", "2024-01-02T00:00:00.000000", "2024-01-02T23:59:59.999999")),
    clause("_lastUpdated", "date", date.pred("eq", "2024-01-01T00:00:00.000000", "2024-01-01T23:59:59.999999")),
    clause("_compartment", "special", AnyOfPred((clause("subject", "reference", ReferencePred("Patient", "p1")),
                                                 clause("_id", "token", token.code(None, "o3"))))),
]


@pytest.mark.parametrize("case", range(len(CASES)))
async def test_agrees_with_the_matcher(loaded, case):
    where = (CASES[case],)
    expected = sorted(key[1] for key in ALL if key[0] == "Observation"
                      and matches(where, entries_of(key), resource_id=key[1], resource_type=key[0]))
    assert await ids(loaded, "Observation", *where, count=100) == expected


async def test_matcher_cases_are_not_trivial(loaded):
    """The cases above do discriminate: many match some but not all observations."""
    sizes = [len(await ids(loaded, "Observation", case, count=100)) for case in CASES]
    assert sum(0 < size < len(OBSERVATIONS) for size in sizes) > len(CASES) // 2


# single-valued dates (Clause.single_date), with values at the edges of the year-wide slack SQLite bounds them by
BIRTHS = {"b1": YEAR, "b2": DAY, "b3": ("2019-01-01T00:00:00.000000", "2019-12-31T23:59:59.999999"),
          "b4": ("2021-01-01T00:00:00.000000", "2021-01-01T23:59:59.999999"),
          "b5": ("2019-12-31T23:30:00.000000", "2019-12-31T23:30:00.000000"), "b6": None}
BIRTH_VALUES = (DAY, MONTH, YEAR, ("2019-12-31T00:00:00.000000", "2019-12-31T23:59:59.999999"),
                ("2021-01-01T00:00:00.000000", "2021-12-31T23:59:59.999999"))


async def test_single_valued_date_clauses_agree_with_the_matcher(store):  # noqa: F811
    for rid, births in BIRTHS.items():
        entries = (DateEntry("birthdate", *births),) if births else ()
        await store.commit([Write("Patient", rid, 1, UPDATED[("Patient", "p1")],
                                  f'{{"resourceType":"Patient","id":"{rid}"}}'.encode(), entries, 0, "create")])
    prefixes = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
    single = [Clause("birthdate", "date", (date.pred(p, *v),), single_date=True)
              for p in prefixes for v in BIRTH_VALUES]
    either = [Clause("birthdate", "date", (date.pred("lt", *DAY), date.pred("gt", *YEAR)), single_date=True)]
    wheres = [(c,) for c in single + either] + [(a, b) for a in single[::2] for b in single[1::3]]
    sizes = []
    for where in wheres:
        expected = sorted(rid for rid, births in BIRTHS.items() if matches(
            where, [DateEntry("birthdate", *births)] if births else [], resource_id=rid, resource_type="Patient"))
        assert await ids(store, "Patient", *where, count=100) == expected, where
        sizes.append(len(expected))
    assert sum(0 < size < len(BIRTHS) for size in sizes) > len(wheres) // 2  # the cases discriminate


async def test_and_of_clauses(loaded):
    code = clause("code", "token", token.code(None, "8310-5"))
    assert await ids(loaded, "Observation", code) == ["o1", "o3"]
    assert await ids(loaded, "Observation", code, clause("date", "date", date.pred("eq", *DAY))) == ["o1"]


async def test_chains_and_has(loaded):
    named = lambda name: clause("name", "string", string.pred(name))  # noqa: E731
    chain = clause("subject", "reference", ChainPred(("Patient",), (named("pet"),)))
    assert await ids(loaded, "Observation", chain) == ["o1", "o2"]
    nested = clause("subject", "reference", ChainPred(("Patient",), (
        clause("general-practitioner", "reference", ChainPred(("Practitioner",), (named("house"),))),)))
    assert await ids(loaded, "Observation", nested) == ["o2"]
    # a chain needs the target to exist: Group/g1 is referenced but was never stored
    assert await ids(loaded, "Observation", clause("subject", "reference", ChainPred(("Group",), ()))) == []
    assert await ids(loaded, "Observation", clause("subject", "reference", ChainPred(("Patient", "Group"), ()))) == [
        "o1", "o2"]
    has = clause("_has", "special", HasPred("Observation", "subject", (clause("code", "token",
                                                                             token.code(LOINC, "8867-4")),)))
    assert await ids(loaded, "Patient", has) == ["p2"]
    has_chain = clause("_has", "special", HasPred("Observation", "subject", (
        clause("subject", "reference", ChainPred(("Patient",), (named("peter"),))),)))
    assert await ids(loaded, "Patient", has_chain) == ["p1"]
    assert await ids(loaded, "Patient", clause("_has", "special", HasPred("Observation", "subject", (
        clause("code", "token", token.code(None, "nothing")),)))) == []


async def test_sort_multi_valued_and_missing(loaded):
    by = lambda *keys: {"sort": tuple(SortKey(p, t, d) for p, t, d in keys), "count": 100}  # noqa: E731
    # ascending by each resource's lowest date, descending by its highest; o4's noon is inside o1's day
    assert await ids(loaded, "Observation", **by(("date", "date", False))) == ["o3", "o2", "o1", "o4"]
    assert await ids(loaded, "Observation", **by(("date", "date", True))) == ["o3", "o2", "o1", "o4"]
    assert await ids(loaded, "Observation", **by(("value-quantity", "quantity", True))) == ["o2", "o3", "o1", "o4"]
    # a resource without the parameter has the lowest value: first ascending, last descending; ties go by id in
    # the direction of the last sort key
    assert await ids(loaded, "Observation", **by(("note", "string", False))) == ["o2", "o4", "o1", "o3"]
    assert await ids(loaded, "Observation", **by(("note", "string", True))) == ["o3", "o1", "o4", "o2"]
    assert await ids(loaded, "Patient", **by(("gender", "token", False), ("name", "string", True))) == [
        "p3", "p2", "p1"]
    assert await ids(loaded, "Observation", **by(("_lastUpdated", "date", True))) == ["o4", "o3", "o2", "o1"]
    assert await ids(loaded, "Observation", **by(("_id", "token", True))) == ["o4", "o3", "o2", "o1"]


@pytest.mark.parametrize("sort", [(), (SortKey("note", "string", True),),
                                  (SortKey("date", "date"), SortKey("note", "string", True)),
                                  (SortKey("value-quantity", "quantity"),)])
async def test_keyset_paging_both_ways(loaded, sort):
    everything = await ids(loaded, "Observation", sort=sort, count=100)

    async def page_at(place: Keyset | None, count: int) -> tuple[list[str], Keyset | None, Keyset | None]:
        query = Query(("Observation",), sort=sort, count=count, after=place)
        page = await loaded.search(query)
        return [v.id for v in page.matches], *places(query, page)

    pages, place = [], None
    while True:
        found, following, preceding = await page_at(place, 2 if len(pages) else 1)
        pages.append(found)
        if following is None:
            break
        place = following
    assert [i for p in pages for i in p] == everything and len(pages) == 3
    assert preceding is not None
    back, back_following, back_preceding = await page_at(preceding, 1)
    assert back == pages[-2][-1:]
    assert back_preceding is not None and back_following is not None
    assert (await page_at(back_following, 10))[0] == pages[-1]
    walked, place = [], preceding
    while place is not None:  # all the way back, one row at a time
        back, _, place = await page_at(place, 1)
        walked = back + walked
    assert walked + pages[-1] == everything


async def test_total_count_and_summary(loaded):
    page = await loaded.search(Query(("Observation",), count=1, total="accurate"))
    assert page.total == 4 and len(page.matches) == 1
    assert (await loaded.search(Query(("Observation",), count=1))).total is None
    counted = await loaded.search(Query(("Patient",), count=0, total="accurate", summary="count"))  # as parsed
    assert counted.total == 3 and counted.matches == []


async def test_includes(loaded):
    def search(*includes, where=()):
        return loaded.search(Query(("Observation",), where, includes=includes, count=100))
    subjects = await search(Include("Observation", "subject"))
    assert sorted(v.id for v in subjects.included) == ["p1", "p2"]  # g1 does not exist, urls never include
    only = await search(Include("Observation", "subject", "Group"))
    assert only.included == []
    iterated = await search(Include("Observation", "subject"), Include("Patient", "general-practitioner",
                                                                          iterate=True),
                            where=(clause("_id", "token", token.code(None, "o1")),))
    assert [v.id for v in iterated.matches] == ["o1"] and [v.id for v in iterated.included] == ["p1", "dr1"]
    not_iterated = await search(Include("Observation", "subject"), Include("Patient", "general-practitioner"),
                                where=(clause("_id", "token", token.code(None, "o1")),))
    assert [v.id for v in not_iterated.included] == ["p1"]
    reverse = await loaded.search(Query(("Patient",), includes=(Include("Observation", "subject", reverse=True),),
                                        count=100))
    assert sorted(v.id for v in reverse.included) == ["o1", "o2"]
    assert all(v.type == "Observation" and v.body for v in reverse.included)


async def test_system_search_and_several_types(loaded):
    named = (clause("name", "string", string.pred("p")),)
    page = await loaded.search(Query((), named, count=100))
    assert sorted((v.type, v.id) for v in page.matches) == [("Patient", "p1"), ("Patient", "p2")]
    both = await loaded.search(Query(("Patient", "Practitioner"), (clause("name", "string", string.pred("chal"),
                                                                          string.pred("hou")),)))
    assert sorted(v.id for v in both.matches) == ["dr2", "p1"]
    assert (await loaded.search(Query((), count=100, total="accurate"))).total == len(ALL)
