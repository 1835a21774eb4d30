"""Search on the SQLite store: each predicate kind agrees with the in-memory matcher (search/matcher.py) on
hand-built entries; chains, _has, AnyOf, sorting, keyset paging both ways and under concurrent inserts,
totals, count=0, includes, system search, deleted resources, conditional-write assertions and index use."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from hearth.search.entries import (CompositeEntry, DateEntry, NumberEntry, QuantityEntry, ReferenceEntry, StringEntry,
                            TokenEntry, UriEntry)
from hearth.search.ir import (AnyOfPred, ChainPred, Clause, CompositePred, HasPred, Include, MissingPred, OfTypePred, Query,
                       ReferencePred, SortKey, TokenPred, TokenTextPred)
from hearth.search.paging import following, places
from hearth.search.params import date, number, quantity, string, token, uri
from hearth.search.matcher import matches
from hearth.storage.base import Assertion, AssertionFailed, KeysetMismatch, Write
from hearth.storage.sqlite import search as sqlite_search
from hearth.storage.sqlite import index, search_where
from hearth.storage.sqlite.store import SqliteStore

SCT, LOINC, UCUM = "http://snomed.info/sct", "http://loinc.org", "http://unitsofmeasure.org"
T0 = datetime(2025, 5, 1, tzinfo=timezone.utc)


def day(text: str) -> DateEntry:
    return DateEntry("date", f"{text}T00:00:00.000000", f"{text}T23:59:59.999999")


def qty(value: float, code: str | None, unit: str | None, system: str | None = UCUM) -> QuantityEntry:
    return QuantityEntry("value-quantity", value, value - 0.05, value + 0.05, system, code, unit)


OBS = {
    "a": [TokenEntry("code", LOINC, "29463-7", "body weight"), TokenEntry("status", None, "final"), day("2021-02-03"),
          qty(72.5, "kg", "kg"), ReferenceEntry("subject", "Patient", "jo"),
          StringEntry("note", "heavy lifting", "Heavy lifting"),
          NumberEntry("rank", 3.0, 2.5, 3.5), UriEntry("instantiates", "http://x.org/q/weight"),
          CompositeEntry("code-value-quantity", (TokenEntry("code", LOINC, "29463-7"), qty(72.5, "kg", "kg")))],
    "b": [TokenEntry("code", LOINC, "8867-4", "heart rate"), TokenEntry("code", None, "pulse"),
          TokenEntry("status", None, "final"),
          DateEntry("date", "2021-02-01T00:00:00.000000", "2021-02-28T23:59:59.999999"), qty(61.0, "/min", "beats/min"),
          ReferenceEntry("subject", "Patient", "mo"), NumberEntry("rank", 10.0, 9.5, 10.5),
          CompositeEntry("code-value-quantity", (TokenEntry("code", LOINC, "8867-4"), qty(61.0, "/min", "beats/min")))],
    "c": [TokenEntry("code", SCT, "29463-7"), TokenEntry("status", None, "amended"),
          DateEntry("date", "2020-07-01T00:00:00.000000", "9999-12-31T23:59:59.999999"), qty(72.0, None, "kg", None),
          ReferenceEntry("subject", "Group", "g"), ReferenceEntry("based-on", None, None, "http://else.org/CarePlan/1"),
          StringEntry("note", "ca va tres bien", "Ça va très bien"), UriEntry("instantiates", "http://x.org/q")],
    "d": [TokenEntry("identifier", "urn:mrn", "M-7", None, "http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
          DateEntry("date", "2021-02-03T08:30:00.000000", "2021-02-03T08:30:00.000000"),
          ReferenceEntry("subject", None, None, identifier_system="urn:ssn", identifier_value="999"),
          ReferenceEntry("instantiates-canonical", None, None, "http://x.org/PlanDefinition/p", "1.1")],
}
PATIENTS = {
    "jo": [StringEntry("name", "jo", "Jo"), StringEntry("name", "march", "March"), TokenEntry("gender", None, "female"),
           ReferenceEntry("general-practitioner", "Practitioner", "hu"), day("1990-04-04")],
    "mo": [StringEntry("name", "moe", "Moe"), TokenEntry("gender", None, "male"),
           ReferenceEntry("general-practitioner", "Practitioner", "wa")],
    "zed": [StringEntry("name", "zed", "Zed")],
}
PRACTITIONERS = {"hu": [StringEntry("name", "hume", "Hume")], "wa": [StringEntry("name", "watt", "Watt")]}
ALL = {**{("Observation", k): v for k, v in OBS.items()}, **{("Patient", k): v for k, v in PATIENTS.items()},
       **{("Practitioner", k): v for k, v in PRACTITIONERS.items()}}
UPDATED = {key: T0 + timedelta(hours=n) for n, key in enumerate(sorted(ALL))}


def body(rtype: str, rid: str) -> bytes:
    return f'{{"resourceType":"{rtype}","id":"{rid}"}}'.encode()


@pytest.fixture
async def store(tmp_path):
    store = SqliteStore(str(tmp_path / "search.db"))
    yield store
    await store.close()


@pytest.fixture
async def loaded(store):
    await store.commit([Write(t, i, 1, UPDATED[(t, i)], body(t, i), tuple(e), 0, "create")
                        for (t, i), e in ALL.items()])
    return store


def clause(param: str, param_type: str, *preds) -> Clause:
    return Clause(param, param_type, preds)


def expected(types: tuple[str, ...], where: tuple[Clause, ...]) -> set[str]:
    """What the matcher says, over the same entries (plus the _lastUpdated entry it reads that from)."""
    def entries(key):
        stamp = UPDATED[key].strftime("%Y-%m-%dT%H:%M:%S.%f")
        return [*ALL[key], DateEntry("_lastUpdated", stamp, stamp)]

    def resolver(rtypes, inner) -> bool:
        return any(matches(inner, entries(k), resource_id=k[1], resource_type=k[0], resolver=resolver)
                   for k in ALL if k[0] in rtypes)
    return {k[1] for k in ALL if (not types or k[0] in types)
            and matches(where, entries(k), resource_id=k[1], resource_type=k[0], resolver=resolver)}


async def found(store, types: tuple[str, ...], *where: Clause, **options) -> list[str]:
    page = await store.search(Query(types, tuple(where), count=100, **options))
    return [v.id for v in page.matches]


DAY, MONTH = ("2021-02-03T00:00:00.000000", "2021-02-03T23:59:59.999999"), \
    ("2021-02-01T00:00:00.000000", "2021-02-28T23:59:59.999999")
YEAR = ("2020-01-01T00:00:00.000000", "2020-12-31T23:59:59.999999")
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
OF_TYPE = "http://terminology.hl7.org/CodeSystem/v2-0203"
CASES = [
    clause("code", "token", token.code(None, "29463-7")),
    clause("code", "token", token.code(LOINC, "29463-7")),
    clause("code", "token", token.code("", "pulse")),
    clause("code", "token", token.code("", None)),
    clause("code", "token", token.code(SCT, None)),
    clause("code", "token", token.code(None, None)),
    clause("code", "token", token.code(None, "29463-7", negated=True)),
    clause("code", "token", token.code(LOINC, "8867-4", negated=True)),
    clause("code", "token", TokenPred(((LOINC, "8867-4"), (None, "zz"), ("", "pulse")))),
    clause("code", "token", TokenPred(((SCT, "29463-7"), (LOINC, None)))),
    clause("code", "token", TokenPred(((LOINC, "29463-7"), (SCT, "29463-7")), negated=True)),
    clause("code", "token", TokenTextPred("heart")),
    clause("identifier", "token", OfTypePred(OF_TYPE, "MR", "M-7")),
    clause("identifier", "token", OfTypePred(OF_TYPE, "DL", "M-7")),
    clause("code", "token", token.code(None, "pulse"), token.code(SCT, "29463-7")),
    clause("_id", "token", token.code(None, "b")),
    clause("_id", "token", TokenPred(((None, "a"), ("", "c"), (SCT, "d")))),
    clause("_id", "token", token.code(None, "a", negated=True)),
    clause("_id", "token", token.code("urn:x", "a")),
    clause("note", "string", string.pred("hea")),
    clause("note", "string", string.pred("ca va")),
    clause("note", "string", string.pred("lift", "contains")),
    clause("note", "string", string.pred("Heavy lifting", "exact")),
    clause("note", "string", string.pred("heavy lifting", "exact")),
    clause("note", "string", string.pred("%", "contains")),
    *(clause("date", "date", date.pred(p, *v)) for p in PREFIXES for v in (DAY, MONTH, YEAR)),
    *(clause("_lastUpdated", "date", date.pred(p, "2025-05-01T02:00:00.000000", "2025-05-01T02:59:59.999999"))
      for p in PREFIXES),
    *(clause("rank", "number", number.pred(p, 10.0, 9.5, 10.5)) for p in PREFIXES),
    *(clause("value-quantity", "quantity", quantity.pred(p, 72.0, 71.5, 72.5, *units))
      for p in ("eq", "ne", "gt", "le", "ap")
      for units in ((None, None), (UCUM, "kg"), ("", "kg"), ("", "beats/min"), (UCUM, None))),
    clause("subject", "reference", ReferencePred("Patient", "jo")),
    clause("subject", "reference", ReferencePred(None, "g")),
    clause("subject", "reference", ReferencePred("Patient", "g")),
    clause("based-on", "reference", ReferencePred(url="http://else.org/CarePlan/1")),
    clause("based-on", "reference", ReferencePred("CarePlan", "1")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://x.org/PlanDefinition/p")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://x.org/PlanDefinition/p", version="1.1")),
    clause("instantiates-canonical", "reference", ReferencePred(url="http://x.org/PlanDefinition/p", version="2")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_system="urn:ssn",
                                                 identifier_value="999")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_system="", identifier_value="999")),
    clause("subject", "reference", ReferencePred(modifier="identifier", identifier_value="999")),
    clause("instantiates", "uri", uri.pred("http://x.org/q")),
    clause("instantiates", "uri", uri.pred("http://x.org/q/weight/v2", "above")),
    clause("instantiates", "uri", uri.pred("http://x.org/q", "below")),
    clause("code-value-quantity", "composite", CompositePred((token.code(LOINC, "29463-7"),
                                                              quantity.pred("gt", 70.0, 69.5, 70.5)))),
    clause("code-value-quantity", "composite", CompositePred((token.code(LOINC, "8867-4"),
                                                              quantity.pred("gt", 70.0, 69.5, 70.5)))),
    clause("code-value-quantity", "composite", CompositePred((TokenPred(((LOINC, "8867-4"),)),
                                                              quantity.pred("lt", 70.0, 69.5, 70.5)))),
    *(clause(p, t, MissingPred(m)) for p, t in (("note", "string"), ("code", "token"), ("_id", "token"),
                                                ("code-value-quantity", "composite")) for m in (True, False)),
    clause("subject", "reference", ChainPred(("Patient",), (clause("name", "string", string.pred("mar")),))),
    clause("subject", "reference", ChainPred(("Patient", "Group"),
                                             (clause("gender", "token", token.code(None, "male")),))),
    clause("subject", "reference", ChainPred(("Patient",), (clause("general-practitioner", "reference", ChainPred(
        ("Practitioner",), (clause("name", "string", string.pred("hu")),))),))),
    clause("_compartment", "special", AnyOfPred((clause("subject", "reference", ReferencePred("Patient", "mo")),
                                                 clause("_id", "token", token.code(None, "c"))))),
]


@pytest.mark.parametrize("where", CASES, ids=range(len(CASES)))
async def test_each_predicate_agrees_with_the_matcher(loaded, where):
    assert set(await found(loaded, ("Observation",), where)) == expected(("Observation",), (where,))


async def test_predicates_select_what_the_spec_says(loaded):
    """A few answers spelled out, so that matcher and SQL cannot agree on something wrong."""
    assert await found(loaded, ("Observation",), clause("code", "token", token.code(None, "29463-7"))) == ["a", "c"]
    assert await found(loaded, ("Observation",), clause("code", "token",
                                                        token.code(LOINC, "29463-7", negated=True))) == \
        ["b", "c", "d"]
    assert await found(loaded, ("Observation",), clause("date", "date", date.pred("eq", *MONTH))) == ["a", "b", "d"]
    assert await found(loaded, ("Observation",), clause("value-quantity", "quantity",
                                                        quantity.pred("eq", 72.0, 71.5, 72.5, "", "kg"))) == ["c"]
    assert await found(loaded, ("Observation",), clause("note", "string", string.pred("ca va"))) == ["c"]
    assert await found(loaded, ("Observation",), clause("note", "string", string.pred("%", "contains"))) == []


HAS = [
    (("Patient",), clause("_has", "special", HasPred("Observation", "subject",
                                                     (clause("code", "token", token.code(LOINC, "8867-4")),)))),
    (("Patient",), clause("_has", "special", HasPred("Observation", "subject",
                                                     (clause("status", "token", token.code(None, "final")),)))),
    (("Practitioner",), clause("_has", "special", HasPred("Patient", "general-practitioner", (
        clause("_has", "special", HasPred("Observation", "subject", (clause("rank", "number",
                                                                            number.pred("gt", 5.0, 4.5, 5.5)),))),)))),
    (("Patient",), clause("name", "string", string.pred("m"), string.pred("z"))),
    ((), clause("name", "string", string.pred("m"))),
    (("Patient", "Practitioner"), clause("name", "string", string.pred("m"), string.pred("hu"))),
]


@pytest.mark.parametrize("types,where", HAS, ids=range(len(HAS)))
async def test_has_and_system_search_agree_with_the_matcher(loaded, types, where):
    assert set(await found(loaded, types, where)) == expected(types, (where,))


async def test_several_clauses_and_deleted_resources(loaded):
    where = (clause("status", "token", token.code(None, "final")), clause("date", "date", date.pred("ge", *MONTH)))
    assert await found(loaded, ("Observation",), *where) == sorted(expected(("Observation",), where)) == ["a", "b"]
    await loaded.commit([Write("Observation", "a", 2, T0 + timedelta(days=1), None, (), 1, "delete")])
    assert await found(loaded, ("Observation",), *where) == ["b"]
    assert "a" not in await found(loaded, ("Observation",),
                                  clause("code", "token", token.code(None, "zz", negated=True)))
    assert "a" not in await found(loaded, ("Observation",))


async def test_sort_by_parameters_with_missing_values_lowest(loaded):
    by_date = [SortKey("date", "date")]
    assert await found(loaded, ("Observation",), sort=tuple(by_date)) == ["c", "b", "a", "d"]  # by lower bound
    assert await found(loaded, ("Observation",), sort=(SortKey("date", "date", True),)) == ["c", "b", "a", "d"]
    assert await found(loaded, ("Observation",), sort=(SortKey("note", "string"),)) == ["b", "d", "c", "a"]
    assert await found(loaded, ("Observation",), sort=(SortKey("note", "string", True),)) == ["a", "c", "d", "b"]
    assert await found(loaded, ("Observation",), sort=(SortKey("rank", "number", True), SortKey("_id", "token"))) == \
        ["b", "a", "c", "d"]
    assert await found(loaded, ("Patient",), sort=(SortKey("_lastUpdated", "date", True),)) == ["zed", "mo", "jo"]
    assert await found(loaded, ("Observation",), sort=(SortKey("subject", "reference"),)) == ["d", "c", "a", "b"]


async def page_through(store, query: Query) -> tuple[list[str], list[str]]:
    """Every id walking forward through the next pages, then back through the previous ones."""
    forward, previous = [], []
    page = await store.search(query)
    while True:
        forward += [v.id for v in page.matches]
        following, preceding = places(query, page)
        previous.append(preceding)
        if following is None:
            break
        query = replace(query, after=following)
        page = await store.search(query)
    assert previous[0] is None and all(previous[1:])  # every page but the first has a way back
    backward = [v.id for v in page.matches]
    while preceding is not None:
        query = replace(query, after=preceding)
        page = await store.search(query)
        preceding = places(query, page)[1]
        backward = [v.id for v in page.matches] + backward
    return forward, backward


@pytest.mark.parametrize("sort", [(), (SortKey("_id", "token", True),), (SortKey("_lastUpdated", "date", True),),
                                  (SortKey("date", "date", True), SortKey("code", "token")),
                                  (SortKey("value-quantity", "quantity"),), (SortKey("name", "string"),)])
async def test_paging_visits_every_row_once_in_order_both_ways(store, sort):
    writes = []
    for n in range(57):
        moment = f"2020-0{n % 9 + 1}-01T00:00:00.000000"
        entries = [TokenEntry("code", LOINC, f"c{n % 4}"), DateEntry("date", moment, moment)]
        if n % 5:
            entries.append(qty(float(n % 7), "kg", "kg"))
        writes.append(Write("Observation", f"o{n:03d}", 1, T0 + timedelta(seconds=n % 11),
                            body("Observation", f"o{n:03d}"), entries, 0, "create"))
    await store.commit(writes)
    full = await store.search(Query(("Observation",), (), sort, count=1000))
    everything = [v.id for v in full.matches]
    assert sorted(everything) == [w.id for w in writes] and not full.more
    forward, backward = await page_through(store, Query(("Observation",), (), sort, count=8))
    assert forward == everything and backward == everything


async def test_walking_the_sort_index_agrees_with_sorting_the_matches(store, monkeypatch):
    """With no selective clause, a page is read off the first sort key's index; same rows, same order."""
    walk_sql = sqlite_search._walk_sql
    await store.commit([Write("Observation", f"o{n:03d}", 1, T0, b"{}", [
        TokenEntry("status", None, "final" if n % 4 else "draft"), *([qty(float(n % 6), "kg", "kg")] * (n % 3 > 0)),
        *([qty(float(n % 5) + 0.5, "kg", "kg")] * (n % 2)), TokenEntry("code", SCT, None, "text only"),
        *([TokenEntry("code", LOINC, f"c{n % 7}")] * (n % 4 > 1))], 0, "create") for n in range(45)])
    where = (clause("status", "token", token.code(None, "final")),)
    for sort in ((SortKey("value-quantity", "quantity"),), (SortKey("code", "token"),),
                 (SortKey("value-quantity", "quantity", True), SortKey("_id", "token", True))):
        sorted_matches = await store.search(Query(("Observation",), where, sort, count=100))
        walks = []
        monkeypatch.setattr(search_where, "ESTIMATE_CAP", 1)  # nothing counts as selective: walk the index
        monkeypatch.setattr(sqlite_search, "_walk_sql", lambda *a: walks.append(a) or walk_sql(*a))
        forward, backward = await page_through(store, Query(("Observation",), where, sort, count=4))
        monkeypatch.undo()
        assert forward == backward == [v.id for v in sorted_matches.matches] and len(forward) == 33
        assert len(walks) > 8


async def test_inserts_between_pages_neither_shift_nor_repeat(store):
    await store.commit([Write("Patient", f"p{n:02d}", 1, T0, body("Patient", f"p{n:02d}"), (), 0, "create")
                        for n in range(0, 40, 2)])
    query = Query(("Patient",), (), count=5)
    page = await store.search(query)
    seen = [v.id for v in page.matches]
    added = 0
    while (query := following(query, page)) is not None:
        # one resource that sorts before everything seen by id and one after: in creation order, both come after
        # every page seen, so both show up, and nothing seen repeats
        await store.commit([Write("Patient", f"p{added:02d}x", 1, T0, b"{}", (), 0, "create"),
                            Write("Patient", f"q{added:02d}", 1, T0, b"{}", (), 0, "create")])
        added += 1
        page = await store.search(query)
        seen += [v.id for v in page.matches]
    assert len(seen) == len(set(seen))
    assert seen[:20] == [f"p{n:02d}" for n in range(0, 40, 2)]
    assert seen[20:] == [name for n in range(added) for name in (f"p{n:02d}x", f"q{n:02d}")]


async def test_a_place_in_another_order_is_refused(loaded):
    query = Query(("Observation",), (), (SortKey("date", "date"),), count=1)
    following_place = places(query, await loaded.search(query))[0]
    with pytest.raises(KeysetMismatch):
        await loaded.search(Query(("Observation",), (), count=1, after=following_place))


async def test_totals_and_count_zero(loaded):
    final = (clause("status", "token", token.code(None, "final")),)
    page = await loaded.search(Query(("Observation",), final, count=1, total="accurate"))
    assert len(page.matches) == 1 and page.total == 2 and page.more
    assert (await loaded.search(Query(("Observation",), final, count=1, total="estimate"))).total == 2
    assert (await loaded.search(Query(("Observation",), final, count=1))).total is None
    counted = await loaded.search(Query(("Observation",), final, count=0, total="accurate"))
    assert counted.total == 2 and counted.matches == [] and not counted.more
    assert (await loaded.search(Query((), (), count=0, total="accurate"))).total == len(ALL)


async def test_includes(loaded):
    subject = Include("Observation", "subject")
    page = await loaded.search(Query(("Observation",), (), count=100, includes=(subject,)))
    assert sorted(v.id for v in page.included) == ["jo", "mo"]  # the Group is not stored; d has no local target
    page = await loaded.search(Query(("Observation",), (), count=100, includes=(Include("Observation", "subject",
                                                                                        "Group"),)))
    assert page.included == []
    iterate = Include("Patient", "general-practitioner", iterate=True)
    page = await loaded.search(Query(("Observation",), (clause("_id", "token", token.code(None, "a")),),
                                     includes=(subject, iterate)))
    assert [(v.type, v.id) for v in page.included] == [("Patient", "jo"), ("Practitioner", "hu")]
    page = await loaded.search(Query(("Practitioner",), (), includes=(
        Include("Patient", "general-practitioner", reverse=True), Include("Observation", "subject", reverse=True,
                                                                          iterate=True))))
    assert sorted(v.id for v in page.included) == ["a", "b", "jo", "mo"]
    page = await loaded.search(Query(("Patient",), (), includes=(Include("*", "*"), Include("*", "*", reverse=True))))
    assert sorted(v.id for v in page.included) == ["a", "b", "hu", "wa"]
    assert all(v.body for v in page.included)


async def test_bodies_are_the_current_versions(loaded):
    await loaded.commit([Write("Patient", "jo", 2, T0 + timedelta(days=2), b'{"v":2}', PATIENTS["jo"], 1, "update")])
    page = await loaded.search(Query(("Patient",), (clause("name", "string", string.pred("jo")),)))
    assert [(v.id, v.version_id, v.body) for v in page.matches] == [("jo", 2, b'{"v":2}')]


async def test_conditional_write_assertions(loaded):
    query = Query(("Patient",), (clause("gender", "token", token.code(None, "male")),))
    await loaded.commit([Write("Patient", "new", 1, T0, b"{}", (), 0, "create")], [Assertion(query, frozenset({"mo"}))])
    with pytest.raises(AssertionFailed):
        await loaded.commit([Write("Patient", "new2", 1, T0, b"{}", (), 0, "create")], [Assertion(query, frozenset())])


# --- index use ------------------------------------------------------------------------------------------------

def plan(path: str, query: Query) -> str:
    conn = sqlite3.connect(path)
    try:
        compiler = search_where.WhereCompiler(conn)
        where, args, _ = compiler.condition(query.types, query.where, "r0", ordered=True)
        rows = conn.execute(f"EXPLAIN QUERY PLAN SELECT r0.rid FROM resources r0 WHERE {where} ORDER BY r0.rid",
                            args).fetchall()
        return "\n".join(row[-1] for row in rows)
    finally:
        conn.close()


async def test_selective_predicates_use_indexes(store, tmp_path):
    writes = [Write("Observation", f"o{n:05d}", 1, T0, b"{}", [
        TokenEntry("code", LOINC, f"c{n}"), TokenEntry("status", None, "final"),
        DateEntry("date", *(f"2020-01-01T00:00:{n % 60:02d}.000000",) * 2),
        ReferenceEntry("subject", "Patient", f"p{n % 50}"), StringEntry("name", f"n{n}", f"N{n}"),
        qty(float(n % 1000), "kg", "kg"), UriEntry("instantiates", f"http://x.org/q/{n % 1000}"),
        ReferenceEntry("subject", None, None, identifier_system="urn:ssn", identifier_value=str(n % 1000)),
        ReferenceEntry("based-on", None, None, f"http://other.org/CarePlan/{n % 1000}")],
        0, "create")
        for n in range(6000)]
    writes += [Write("Patient", f"p{n}", 1, T0, b"{}", [StringEntry("name", f"pat{n}", f"Pat{n}")], 0, "create")
               for n in range(50)]
    await store.commit(writes)
    path = str(tmp_path / "search.db")
    selective = {
        "token": clause("code", "token", token.code(LOINC, "c17")),
        "string": clause("name", "string", string.pred("n171")),
        "reference": clause("subject", "reference", ReferencePred("Patient", "p3")),
        "chain": clause("subject", "reference", ChainPred(("Patient",), (clause("name", "string",
                                                                                string.pred("pat7")),))),
        "_id": clause("_id", "token", token.code(None, "o00017")),
        "exact": clause("name", "string", string.pred("N171", "exact")),
        "date": clause("date", "date", date.pred("eq", "2020-01-01T00:00:07.000000", "2020-01-01T00:00:07.999999")),
        "quantity": clause("value-quantity", "quantity", quantity.pred("eq", 17.0, 16.95, 17.05, UCUM, "kg")),
        "uri": clause("instantiates", "uri", uri.pred("http://x.org/q/17", "below")),
        "identifier": clause("subject", "reference", ReferencePred(modifier="identifier", identifier_system="urn:ssn",
                                                                   identifier_value="17")),
        "url": clause("based-on", "reference", ReferencePred(url="http://other.org/CarePlan/17")),
    }
    for name, where in selective.items():
        text = plan(path, Query(("Observation",), (clause("status", "token", token.code(None, "final")), where)))
        scans = [line for line in text.splitlines() if line.strip().startswith("SCAN") and "json_each" not in line
                 or line.strip().endswith(("(type=?)", "(param=?)"))]  # every row of a type or parameter
        assert not scans, (name, text)
    # no selective clause: walk the type's rows in page order (the default, creation), test each row
    text = plan(path, Query(("Observation",), (clause("status", "token", token.code(None, "final")),)))
    assert "USING INDEX resources_type (type=?)" in text and "TEMP B-TREE" not in text, text


def count_plan(path: str, query: Query) -> str:
    conn = sqlite3.connect(path)
    try:
        sql, args = search_where.WhereCompiler(conn).count(query.types, query.where)
        return "\n".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
    finally:
        conn.close()


async def test_counts_and_inner_rid_sets_read_the_index_alone(store, tmp_path):
    """Index rows carry their resource's type: a count needs no `resources` row, yet other types sharing the
    parameter and deleted resources are not counted."""
    code = TokenEntry("code", LOINC, "8302-2")
    writes = [Write("Observation", f"o{n}", 1, T0, body("Observation", f"o{n}"),
                    (code, ReferenceEntry("patient", "Patient", f"p{n % 3}")), 0, "create") for n in range(10)]
    writes += [Write("Condition", f"c{n}", 1, T0, body("Condition", f"c{n}"),
                     (code, ReferenceEntry("patient", "Patient", "p3")), 0, "create") for n in range(4)]
    writes += [Write("Observation", "gone", 1, T0, body("Observation", "gone"),
                     (code, ReferenceEntry("patient", "Patient", "p3")), 0, "create")]
    writes += [Write("Patient", f"p{n}", 1, T0, body("Patient", f"p{n}"), (), 0, "create") for n in range(4)]
    await store.commit(writes)
    await store.commit([Write("Observation", "gone", 2, T0, None, (), 1, "delete")])
    coded = clause("code", "token", token.code(LOINC, "8302-2"))
    counted = await store.search(Query(("Observation",), (coded,), count=0, total="accurate"))
    assert counted.total == 10
    assert (await store.search(Query(("Condition", "Observation"), (coded,), count=0, total="accurate"))).total == 14
    text = count_plan(str(tmp_path / "search.db"), Query(("Observation",), (coded,)))
    assert "resources" not in text and "idx_token_code" in text, text
    # `_has` reads the Observations off the index, then their references: not p3, which only Conditions and a
    # deleted Observation reference
    has = clause("_has", "special", HasPred("Observation", "patient", (coded,)))
    assert [v.id for v in (await store.search(Query(("Patient",), (has,)))).matches] == ["p0", "p1", "p2"]
    assert (await store.search(Query(("Patient",), (has,), count=0, total="accurate"))).total == 3


async def test_an_index_without_resource_types_is_migrated_at_start_up(tmp_path):
    path = str(tmp_path / "old.db")
    store = SqliteStore(path)
    await store.commit([Write("Patient", "p1", 1, T0, body("Patient", "p1"), (StringEntry("name", "peter", "Peter"),),
                              0, "create"),
                        Write("Practitioner", "d1", 1, T0, body("Practitioner", "d1"),
                              (StringEntry("name", "peter", "Peter"),), 0, "create")])
    await store.close()
    conn = sqlite3.connect(path)  # back to the layout before rows carried their type
    for name in index.DRIVERS:
        conn.execute(f"DROP INDEX {name}")
    for table in index.TABLES:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN resource_type")
    for statement in index.SCHEMA:
        if statement.lstrip().startswith("CREATE INDEX"):
            conn.execute(statement.replace(", resource_type", ""))
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    try:
        named = clause("name", "string", string.pred("pet"))
        assert [v.id for v in (await store.search(Query(("Patient",), (named,)))).matches] == ["p1"]
        assert (await store.search(Query(("Practitioner",), (named,), count=0, total="accurate"))).total == 1
        await store.commit([Write("Patient", "p2", 1, T0, body("Patient", "p2"),
                                  (StringEntry("name", "petra", "Petra"),), 0, "create")])
        assert (await store.search(Query(("Patient",), (named,), count=0, total="accurate"))).total == 2
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert not index.migrate(conn)  # done once
        columns = [row[2] for row in conn.execute("PRAGMA index_info(idx_string_norm)")]
        assert columns == ["param", "norm", "resource_type", "rid"]
    finally:
        conn.close()
