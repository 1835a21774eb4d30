"""capability/terminology.py: ValueSet expansion and is-a subsumption for :in/:not-in/:above/:below."""

from __future__ import annotations

import gzip
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from hearth.capability.generate_terminology import write_terminology
from hearth.capability.terminology import DATA_FILE, Terminology, default_terminology

FHIR = "http://hl7.org/fhir"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
SCT = "http://snomed.info/sct"
SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "r4"


def codes(expansion: frozenset | None, system: str) -> set[str]:
    assert expansion is not None
    assert {s for s, _ in expansion} == {system}
    return {c for _, c in expansion}


def shapes_cs(url: str = "http://example.org/cs/shapes", version: str = "1", **extra: object) -> dict:
    """shape > polygon > (triangle, square); shape > round > circle; ellipse has parent `round` by property."""
    return {
        "resourceType": "CodeSystem", "url": url, "version": version, "content": "complete",
        "property": [{"code": "parent", "uri": f"{FHIR}/concept-properties#parent", "type": "code"}],
        "concept": [
            {"code": "shape", "concept": [
                {"code": "polygon", "concept": [{"code": "triangle"}, {"code": "square"}]},
                {"code": "round", "concept": [{"code": "circle"}]},
            ]},
            {"code": "ellipse", "property": [{"code": "parent", "valueCode": "round"}]},
        ],
        **extra,
    }


def valueset(url: str, *include: dict, version: str | None = None, exclude: list[dict] | None = None) -> dict:
    compose: dict = {"include": list(include)}
    if exclude:
        compose["exclude"] = exclude
    return {"resourceType": "ValueSet", "url": url, "version": version, "compose": compose}


# --- the shipped R4 package ------------------------------------------------------------------------


def test_package_enumeration_valuesets():
    term = default_terminology()
    assert term is default_terminology()
    gender = term.expand(f"{FHIR}/ValueSet/administrative-gender")
    assert codes(gender, f"{FHIR}/administrative-gender") == {"male", "female", "other", "unknown"}
    category = term.expand(f"{FHIR}/ValueSet/observation-category")
    assert codes(category, "http://terminology.hl7.org/CodeSystem/observation-category") == {
        "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey", "exam", "therapy",
        "activity"}


def test_package_versioned_and_unknown_urls():
    term = default_terminology()
    url = f"{FHIR}/ValueSet/administrative-gender"
    assert term.expand(f"{url}|4.0.1") == term.expand(url)
    assert term.expand(f"{url}|9.9") is None
    assert term.expand("http://example.org/no-such-valueset") is None


def test_package_subsumption_with_nesting_and_child_property():
    term = default_terminology()
    below = term.descendants(ACT, "_ActCoverageTypeCode")
    assert {"_ActCoverageTypeCode", "_ActInsuranceTypeCode", "_ActHealthInsuranceTypeCode", "DENTAL"} <= below
    assert "AUTOPOL" in below  # only reachable through a `child` property (v3 polyhierarchy)
    assert "_ActAccountCode" not in below
    assert term.ancestors(ACT, "DENTAL") == {
        "DENTAL", "_ActHealthInsuranceTypeCode", "_ActInsuranceTypeCode", "_ActCoverageTypeCode"}
    assert {"_ActInsurancePolicyCode", "_ActInsuranceTypeCode"} <= term.ancestors(ACT, "AUTOPOL")
    assert term.descendants(ACT, "DENTAL") == {"DENTAL"}


def test_unknown_system_or_code_is_just_the_code():
    term = default_terminology()
    assert term.descendants(SCT, "73211009") == {"73211009"}
    assert term.ancestors(ACT, "NOT-A-CODE") == {"NOT-A-CODE"}
    assert term.has_codesystem(ACT)
    assert not term.has_codesystem(SCT)  # shipped as content=not-present
    assert not term.has_codesystem("http://loinc.org")


def test_package_filters():
    term = default_terminology()
    account = codes(term.expand(f"{FHIR}/ValueSet/account-type"), ACT)
    assert account == term.descendants(ACT, "_ActAccountCode")
    assert {"_ActAccountCode", "CASH", "PBILLACCT"} <= account
    # is-not-a: every v2-0131 code except O (which has no children)
    contact = codes(term.expand(f"{FHIR}/ValueSet/patient-contactrelationship"),
                    "http://terminology.hl7.org/CodeSystem/v2-0131")
    assert "O" not in contact and {"C", "E", "N", "U"} <= contact and len(contact) == 11
    # descendent-of excludes the code itself
    inactive = codes(term.expand(f"{FHIR}/ValueSet/inactive"), "http://terminology.hl7.org/CodeSystem/v3-ActMood")
    assert "_ActMoodPredicate" not in inactive and {"GOL", "RSK", "GOL.CRT"} <= inactive


def test_package_external_systems_are_unknown():
    term = default_terminology()
    assert term.expand(f"{FHIR}/ValueSet/condition-code") is None  # all of SNOMED CT
    assert term.expand(f"{FHIR}/ValueSet/observation-codes") is None  # all of LOINC
    assert term.expand(f"{FHIR}/ValueSet/ucum-units") is None
    # explicit concept lists from external systems do expand
    assert ("http://dicom.nema.org/resources/ontology/DCM", "110150") in term.expand(
        f"{FHIR}/ValueSet/participation-role-type")


def test_shipped_data_is_small_and_current(tmp_path: Path):
    assert DATA_FILE.stat().st_size < 1_500_000
    write_terminology(SPEC, tmp_path)
    assert (tmp_path / "terminology.json.gz").read_bytes() == DATA_FILE.read_bytes()


# --- run-time CodeSystems and ValueSets ------------------------------------------------------------


def test_add_valueset_with_explicit_concepts_and_versions():
    term = Terminology()
    url = "http://example.org/vs/conditions"
    term.add_valueset(valueset(url, {"system": SCT, "concept": [{"code": "44054006", "display": "Diabetes"},
                                                                   {"code": "38341003"}]}, version="1"))
    assert term.expand(url) == {(SCT, "44054006"), (SCT, "38341003")}
    term.add_valueset(valueset(url, {"system": SCT, "concept": [{"code": "195967001"}]}, version="2"))
    assert term.expand(url) == {(SCT, "195967001")}  # the last added version is current
    assert term.expand(f"{url}|1") == {(SCT, "44054006"), (SCT, "38341003")}
    assert term.expand(f"{url}|3") is None
    term.remove(f"{url}|2")
    assert term.expand(url) == {(SCT, "44054006"), (SCT, "38341003")}
    term.remove(url)
    assert term.expand(url) is None


def test_include_of_stored_codesystem_and_filters():
    term = Terminology()
    cs = "http://example.org/cs/shapes"
    term.add_codesystem(shapes_cs(cs))
    term.add_valueset(valueset("http://example.org/vs/all", {"system": cs}))
    term.add_valueset(valueset("http://example.org/vs/round", {"system": cs, "filter": [
        {"property": "concept", "op": "is-a", "value": "round"}]}))
    term.add_valueset(valueset("http://example.org/vs/kids", {"system": cs, "filter": [
        {"property": "parent", "op": "=", "value": "polygon"}]}))
    term.add_valueset(valueset("http://example.org/vs/re", {"system": cs, "filter": [
        {"property": "code", "op": "regex", "value": "[a-z]*le"}]}))
    term.add_valueset(valueset("http://example.org/vs/prop", {"system": cs, "filter": [
        {"property": "colour", "op": "=", "value": "red"}]}))
    assert codes(term.expand("http://example.org/vs/all"), cs) == {
        "shape", "polygon", "triangle", "square", "round", "circle", "ellipse"}
    assert codes(term.expand("http://example.org/vs/round"), cs) == {"round", "circle", "ellipse"}
    assert codes(term.expand("http://example.org/vs/kids"), cs) == {"triangle", "square"}
    assert codes(term.expand("http://example.org/vs/re"), cs) == {"triangle", "circle"}
    assert term.expand("http://example.org/vs/prop") is None  # concept properties are not stored
    assert term.descendants(cs, "shape") == {"shape", "polygon", "triangle", "square", "round", "circle", "ellipse"}
    assert term.ancestors(cs, "ellipse") == {"ellipse", "round", "shape"}


def test_codesystem_changes_invalidate_cached_expansions():
    term = Terminology()
    cs = "http://example.org/cs/shapes"
    term.add_valueset(valueset("http://example.org/vs/all", {"system": cs}))
    assert term.expand("http://example.org/vs/all") is None  # system not known yet
    term.add_codesystem(shapes_cs(cs))
    assert len(term.expand("http://example.org/vs/all")) == 7
    assert term.descendants(cs, "round") == {"round", "circle", "ellipse"}
    term.add_codesystem(shapes_cs(cs, version="2", hierarchyMeaning="grouped-by"))
    assert term.descendants(cs, "round") == {"round"}  # grouping is not is-a
    term.remove(cs)
    assert term.expand("http://example.org/vs/all") is None
    assert not term.has_codesystem(cs)


def test_incomplete_codesystem_is_unknown_for_system_includes():
    term = Terminology()
    cs = "http://example.org/cs/shapes"
    term.add_codesystem(shapes_cs(cs, content="example"))
    term.add_valueset(valueset("http://example.org/vs/all", {"system": cs}))
    term.add_valueset(valueset("http://example.org/vs/two", {"system": cs, "concept": [{"code": "square"}]}))
    assert term.expand("http://example.org/vs/all") is None
    assert term.expand("http://example.org/vs/two") == {(cs, "square")}


def test_imports_excludes_and_cycles():
    term = Terminology()
    cs = "http://example.org/cs/shapes"
    term.add_codesystem(shapes_cs(cs))
    term.add_valueset(valueset("http://example.org/vs/all", {"system": cs}))
    term.add_valueset(valueset("http://example.org/vs/polygons", {"system": cs, "filter": [
        {"property": "concept", "op": "is-a", "value": "polygon"}]}))
    term.add_valueset(valueset(
        "http://example.org/vs/mix",
        {"valueSet": ["http://example.org/vs/all"]},
        {"system": SCT, "concept": [{"code": "1"}]},
        exclude=[{"valueSet": ["http://example.org/vs/polygons"]}, {"system": cs, "concept": [{"code": "shape"}]}]))
    assert term.expand("http://example.org/vs/mix") == {(cs, "round"), (cs, "circle"), (cs, "ellipse"), (SCT, "1")}
    # system + valueSet in one include: intersection
    term.add_valueset(valueset("http://example.org/vs/both", {
        "system": cs, "concept": [{"code": "square"}, {"code": "circle"}],
        "valueSet": ["http://example.org/vs/polygons"]}))
    assert term.expand("http://example.org/vs/both") == {(cs, "square")}
    term.add_valueset(valueset("http://example.org/vs/a", {"valueSet": ["http://example.org/vs/b"]}))
    term.add_valueset(valueset("http://example.org/vs/b", {"valueSet": ["http://example.org/vs/a"]}))
    assert term.expand("http://example.org/vs/a") is None
    # an unknown exclude makes the whole expansion unknown
    term.add_valueset(valueset("http://example.org/vs/unsure", {"system": cs}, exclude=[{"system": SCT}]))
    assert term.expand("http://example.org/vs/unsure") is None


def test_valueset_with_only_an_expansion():
    term = Terminology()
    term.add_valueset({"resourceType": "ValueSet", "url": "http://example.org/vs/pre", "expansion": {
        "total": 3, "contains": [{"system": SCT, "code": "1"}, {"abstract": True, "display": "group", "contains": [
            {"system": SCT, "code": "2"}, {"system": "http://loinc.org", "code": "3"}]}]}})
    assert term.expand("http://example.org/vs/pre") == {(SCT, "1"), (SCT, "2"), ("http://loinc.org", "3")}
    term.add_valueset({"resourceType": "ValueSet", "url": "http://example.org/vs/page", "expansion": {
        "total": 100, "contains": [{"system": SCT, "code": "1"}]}})
    assert term.expand("http://example.org/vs/page") is None


def test_runtime_definitions_shadow_shipped_ones_until_removed():
    shipped = orjson.loads(gzip.decompress(DATA_FILE.read_bytes()))
    term = Terminology(shipped["codesystems"], shipped["valuesets"])
    url = f"{FHIR}/ValueSet/administrative-gender"
    term.add_valueset(valueset(url, {"system": SCT, "concept": [{"code": "248153007"}]}, version="local"))
    assert term.expand(url) == {(SCT, "248153007")}
    assert len(term.expand(f"{url}|4.0.1")) == 4
    term.remove(url)
    assert len(term.expand(url)) == 4
    term.add_valueset({"resourceType": "ValueSet", "status": "draft"})  # no url: nothing to address it by


def test_concurrent_first_use():
    shipped = orjson.loads(gzip.decompress(DATA_FILE.read_bytes()))
    term = Terminology(shipped["codesystems"], shipped["valuesets"])
    urls = [v["url"] for v in shipped["valuesets"]][:300]
    barrier = threading.Barrier(8)

    def run(_: int) -> list:
        barrier.wait()
        return [term.expand(u) for u in urls] + [term.descendants(ACT, "_ActCoverageTypeCode")]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(8)))
    assert all(r == results[0] for r in results)
    assert results[0][-1] == default_terminology().descendants(ACT, "_ActCoverageTypeCode")


@pytest.mark.parametrize("op,value,expected", [
    ("in", "square, circle,nope", {"square", "circle"}),
    ("not-in", "shape,polygon,round", {"triangle", "square", "circle", "ellipse"}),
    ("generalizes", "circle", {"circle", "round", "shape"}),
    ("=", "circle", {"circle"}),
    ("descendent-of", "polygon", {"triangle", "square"}),
])
def test_filter_ops(op: str, value: str, expected: set[str]):
    term = Terminology()
    cs = "http://example.org/cs/shapes"
    term.add_codesystem(shapes_cs(cs))
    term.add_valueset(valueset("http://example.org/vs/f", {"system": cs, "filter": [
        {"property": "concept", "op": op, "value": value}]}))
    assert codes(term.expand("http://example.org/vs/f"), cs) == expected
