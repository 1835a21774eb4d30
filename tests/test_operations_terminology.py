"""The terminology operations over HTTP on both backends: $expand, $validate-code, $lookup, $subsumes, for the shipped
R4 definitions and for CodeSystems and ValueSets stored in Hearth."""

from __future__ import annotations

import uuid

import pytest

from conftest import FHIR_JSON

GENDER_VS = "http://hl7.org/fhir/ValueSet/administrative-gender"
GENDER = "http://hl7.org/fhir/administrative-gender"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def parameters(**values: object) -> dict:
    """A Parameters body: str -> valueString (valueUri for url/system), dict -> valueCoding/resource."""
    listed = []
    for name, value in values.items():
        if isinstance(value, dict) and "resourceType" in value:
            listed.append({"name": name, "resource": value})
        elif isinstance(value, dict):
            listed.append({"name": name, "valueCodeableConcept" if "coding" in value else "valueCoding": value})
        elif isinstance(value, int):
            listed.append({"name": name, "valueInteger": value})
        else:
            listed.append({"name": name, "valueUri" if name in ("url", "system") else "valueCode": value})
    return {"resourceType": "Parameters", "parameter": listed}


def values(body: dict) -> dict:
    """A Parameters answer's primitive values by name (the first of each)."""
    found = {}
    for parameter in body["parameter"]:
        value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        found.setdefault(parameter["name"], value)
    return found


def contains(body: dict) -> list[tuple[str, str, str | None]]:
    return [(c["system"], c["code"], c.get("display")) for c in body["expansion"].get("contains", [])]


async def test_expand_a_shipped_valueset_with_displays_in_definition_order(client):
    response = await client.get("/ValueSet/$expand", params={"url": GENDER_VS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "ValueSet" and body["url"] == GENDER_VS
    assert body["expansion"]["total"] == 4 and body["expansion"]["offset"] == 0
    assert contains(body) == [(GENDER, "male", "Male"), (GENDER, "female", "Female"), (GENDER, "other", "Other"),
                              (GENDER, "unknown", "Unknown")]


async def test_expand_filter_count_offset_and_post(client):
    filtered = (await client.get("/ValueSet/$expand", params={"url": GENDER_VS, "filter": "MAL"})).json()
    assert [c[1] for c in contains(filtered)] == ["male", "female"]  # "mal" in "male" and "female"
    assert filtered["expansion"]["total"] == 2
    page = (await client.get("/ValueSet/$expand", params={"url": GENDER_VS, "count": "2", "offset": "1",
                                                          "displayLanguage": "de"})).json()
    assert [c[1] for c in contains(page)] == ["female", "other"]
    assert (page["expansion"]["total"], page["expansion"]["offset"]) == (4, 1)
    posted = await client.post("/ValueSet/$expand", json=parameters(url=GENDER_VS, filter="unk"), headers=FHIR_JSON)
    assert posted.status_code == 200 and contains(posted.json()) == [(GENDER, "unknown", "Unknown")]


async def test_expand_errors(client):
    unknown = await client.get("/ValueSet/$expand", params={"url": "http://example.org/no-such-valueset"})
    assert unknown.status_code == 404 and unknown.json()["resourceType"] == "OperationOutcome"
    # all of SNOMED CT below a concept: Hearth does not hold SNOMED CT
    snomed = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [
        {"system": "http://snomed.info/sct", "filter": [{"property": "concept", "op": "is-a", "value": "404684003"}]}]}}
    cannot = await client.post("/ValueSet/$expand", json=parameters(valueSet=snomed), headers=FHIR_JSON)
    assert cannot.status_code == 400 and cannot.json()["issue"][0]["code"] == "not-supported"
    assert (await client.get("/ValueSet/$expand")).status_code == 400
    assert (await client.get("/ValueSet/$expand", params={"url": GENDER_VS, "count": "-1"})).status_code == 400
    # v3 ActCode has more codes than one answer holds: paged, or refused naming the limit
    whole = {"resourceType": "ValueSet", "status": "active", "compose": {"include": [{"system": ACT}]}}
    too_big = await client.post("/ValueSet/$expand", json=parameters(valueSet=whole), headers=FHIR_JSON)
    assert too_big.status_code == 400 and "expansion limit" in too_big.text
    paged = await client.post("/ValueSet/$expand", json=parameters(valueSet=whole, count=3), headers=FHIR_JSON)
    assert paged.status_code == 200 and len(contains(paged.json())) == 3 and paged.json()["expansion"]["total"] > 1000


async def test_lookup(client):
    response = await client.get("/CodeSystem/$lookup", params={"system": GENDER, "code": "female"})
    assert response.status_code == 200, response.text
    assert values(response.json()) == {"name": "AdministrativeGender", "version": "4.0.1", "display": "Female"}
    act = (await client.post("/CodeSystem/$lookup", json=parameters(coding={"system": ACT, "code": "IMP"}),
                             headers=FHIR_JSON)).json()
    assert values(act)["display"] == "inpatient encounter"
    properties = {(p["part"][0]["valueCode"], p["part"][1]["valueCode"]) for p in act["parameter"]
                  if p["name"] == "property"}
    assert properties == {("parent", "_ActEncounterCode"), ("child", "ACUTE"), ("child", "NONAC")}
    draft = (await client.get("/CodeSystem/$lookup", params={"system": "http://hl7.org/fhir/publication-status",
                                                             "code": "draft"})).json()
    designations = [{part["name"]: next(v for k, v in part.items() if k.startswith("value")) for part in p["part"]}
                    for p in draft["parameter"] if p["name"] == "designation"]
    assert {"language": "ru", "value": "черновик"} in designations
    unknown_code = await client.get("/CodeSystem/$lookup", params={"system": GENDER, "code": "nope"})
    assert unknown_code.status_code == 404 and unknown_code.json()["resourceType"] == "OperationOutcome"
    unknown_system = await client.get("/CodeSystem/$lookup", params={"system": "http://example.org/x", "code": "a"})
    assert unknown_system.status_code == 404


async def test_validate_code(client):
    async def check(**params: str) -> dict:
        response = await client.get("/ValueSet/$validate-code", params={"url": GENDER_VS, **params})
        assert response.status_code == 200, response.text
        return values(response.json())

    assert await check(system=GENDER, code="female") == {"result": True, "display": "Female"}
    assert (await check(system=GENDER, code="F"))["result"] is False
    assert (await check(system=ACT, code="female"))["result"] is False  # right code, wrong system
    wrong = await check(system=GENDER, code="female", display="Woman")
    assert wrong["result"] is False and "Woman" in wrong["message"] and wrong["display"] == "Female"
    assert (await check(system=GENDER, code="female", display="female"))["result"] is True  # case ignored
    concept = {"coding": [{"system": "http://example.org/other", "code": "x"}, {"system": GENDER, "code": "other"}]}
    posted = await client.post("/ValueSet/$validate-code", json=parameters(url=GENDER_VS, codeableConcept=concept),
                               headers=FHIR_JSON)
    assert values(posted.json())["result"] is True


async def test_subsumes_on_the_v3_act_code_hierarchy(client):
    async def outcome(a: str, b: str) -> str:
        response = await client.get("/CodeSystem/$subsumes", params={"system": ACT, "codeA": a, "codeB": b})
        assert response.status_code == 200, response.text
        return values(response.json())["outcome"]

    assert await outcome("_ActEncounterCode", "ACUTE") == "subsumes"  # through IMP
    assert await outcome("ACUTE", "IMP") == "subsumed-by"
    assert await outcome("AMB", "IMP") == "not-subsumed"
    assert await outcome("AMB", "AMB") == "equivalent"
    posted = await client.post("/CodeSystem/$subsumes", headers=FHIR_JSON, json=parameters(
        codingA={"system": ACT, "code": "IMP"}, codingB={"system": ACT, "code": "NONAC"}))
    assert values(posted.json())["outcome"] == "subsumes"
    unknown = await client.get("/CodeSystem/$subsumes", params={"system": ACT, "codeA": "AMB", "codeB": "nope"})
    assert unknown.status_code == 404


async def test_stored_codesystem_and_valueset_at_type_and_instance_level(client):
    system, vs_url = f"http://example.org/cs/{uuid.uuid4().hex}", f"http://example.org/vs/{uuid.uuid4().hex}"
    codesystem = {"resourceType": "CodeSystem", "id": "shapes", "url": system, "name": "Shapes", "version": "2",
                  "status": "active", "content": "complete", "hierarchyMeaning": "is-a", "concept": [
                      {"code": "shape", "display": "Shape", "concept": [
                          {"code": "round", "display": "Round", "concept": [{"code": "circle", "display": "Circle"}]},
                          {"code": "square", "display": "Square",
                           "designation": [{"language": "de", "value": "Quadrat"}]}]}]}
    valueset = {"resourceType": "ValueSet", "id": "round-things", "url": vs_url, "status": "active",
                "compose": {"include": [{"system": system, "filter": [
                    {"property": "concept", "op": "is-a", "value": "round"}]},
                    {"system": system, "concept": [{"code": "square", "display": "Box"}]}]}}
    for resource in (codesystem, valueset):
        stored = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
        assert stored.status_code == 201, stored.text
    expanded = (await client.get("/ValueSet/round-things/$expand")).json()
    assert contains(expanded) == [(system, "round", "Round"), (system, "circle", "Circle"), (system, "square", "Box")]
    assert expanded["id"] == "round-things"
    by_url = (await client.get("/ValueSet/$expand", params={"url": vs_url, "filter": "circ"})).json()
    assert contains(by_url) == [(system, "circle", "Circle")]
    looked_up = values((await client.get("/CodeSystem/shapes/$lookup", params={"code": "circle"})).json())
    assert looked_up == {"name": "Shapes", "version": "2", "display": "Circle", "property": None}
    subsumes = await client.get("/CodeSystem/shapes/$subsumes", params={"codeA": "shape", "codeB": "circle"})
    assert values(subsumes.json())["outcome"] == "subsumes"
    in_set = await client.get("/ValueSet/round-things/$validate-code", params={"system": system, "code": "circle"})
    assert values(in_set.json())["result"] is True
    german = await client.get("/ValueSet/round-things/$validate-code",
                              params={"system": system, "code": "square", "display": "Quadrat"})
    assert values(german.json())["result"] is True  # a designation is a valid display
    outside = await client.get("/ValueSet/round-things/$validate-code", params={"system": system, "code": "shape"})
    assert values(outside.json())["result"] is False
    assert (await client.get("/ValueSet/no-such/$expand")).status_code == 404


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_capability_statement_lists_them(client):
    statement = (await client.get("/metadata")).json()
    listed = {(r["type"], o["name"]) for r in statement["rest"][0]["resource"] for o in r.get("operation", [])}
    assert {("ValueSet", "expand"), ("ValueSet", "validate-code"), ("CodeSystem", "lookup"),
            ("CodeSystem", "subsumes")} <= listed
