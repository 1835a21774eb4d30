"""PATCH: JSON Patch and FHIRPath Patch, by id and by condition, with If-Match; invalid results change nothing."""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from hearth.capability.outcome import FhirError
from conftest import FHIR_JSON
from hearth.interactions.fhirpath_patch import compile_fhirpath_patch, select
from hearth.interactions.limits import Limits
from hearth.interactions.patch_budget import Budget

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
PATIENT = {"resourceType": "Patient", "active": True,
           "identifier": [{"system": "http://hospital.test/mrn", "value": "p1"}],
           "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                    {"use": "usual", "given": ["Jim"]}],
           "gender": "male", "birthDate": "1974-12-25"}


def operation(kind: str, path: str, **parts) -> dict:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name in ("index", "source", "destination"):
            part.append({"name": name, "valueInteger": value})
        elif name == "name":
            part.append({"name": "name", "valueString": value})
        else:  # value_<Type>=...
            part.append({"name": "value", f"value{name.split('_', 1)[1]}": value})
    return {"name": "operation", "part": part}


def fhirpath_patch(*operations: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": list(operations)}


async def make_patient(client, **changes) -> dict:
    response = await client.post("/Patient", json={**PATIENT, **changes}, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return response.json()


# --- FHIRPath Patch on dicts --------------------------------------------------------------------------------

def apply(resource: dict, *operations: dict, limits: Limits = Limits()) -> dict:
    resource = copy.deepcopy(resource)
    return compile_fhirpath_patch(fhirpath_patch(*operations)).apply(resource, Budget.of(resource, limits, "Patient/1"))


def test_path_evaluation_where_index_first():
    assert [node.value for node in select("Patient.name.where(use='official').given[1]", PATIENT)] == ["James"]
    assert [n.value for n in select("Patient.name.first().family", PATIENT)] == ["Chalmers"]
    assert [n.value for n in select("Patient.name.where(use!='official').given", PATIENT)] == ["Jim"]
    observation = {"resourceType": "Observation", "valueQuantity": {"value": Decimal("72.50")}}
    assert select("Observation.value.value", observation)[0].value == Decimal("72.50")


def test_fhirpath_operations():
    result = apply(PATIENT,
                   operation("replace", "Patient.birthDate", value_Date="1975-01-01"),
                   operation("add", "Patient", name="deceasedBoolean", value_Boolean=False),
                   operation("insert", "Patient.name.where(use='official').given", index=0, value_String="Dr"),
                   operation("move", "Patient.name", source=1, destination=0),
                   operation("delete", "Patient.gender"),
                   operation("delete", "Patient.maritalStatus"),  # not there: not an error
                   operation("add", "Patient", name="telecom", value_ContactPoint={"system": "phone", "value": "1"}))
    assert result["birthDate"] == "1975-01-01"
    assert result["deceasedBoolean"] is False
    assert result["name"][0] == {"use": "usual", "given": ["Jim"]}
    assert result["name"][1]["given"] == ["Dr", "Peter", "James"]
    assert "gender" not in result
    assert result["telecom"] == [{"system": "phone", "value": "1"}]


def test_fhirpath_replace_changes_choice_type():
    observation = {"resourceType": "Observation", "valueString": "high"}
    result = apply(observation, operation("replace", "Observation.value", value_Quantity={"value": 3}))
    assert result == {"resourceType": "Observation", "valueQuantity": {"value": 3}}


def test_fhirpath_errors_are_precise():
    with pytest.raises(FhirError) as missing:
        apply(PATIENT, operation("replace", "Patient.maritalStatus", value_CodeableConcept={"text": "x"}))
    assert missing.value.status == 422 and "matches nothing" in missing.value.diagnostics
    with pytest.raises(FhirError) as several:
        apply(PATIENT, operation("replace", "Patient.name.given", value_String="x"))
    assert several.value.status == 422 and "3 elements" in several.value.diagnostics
    with pytest.raises(FhirError) as unknown:
        apply(PATIENT, operation("replace", "Patient.nickname", value_String="x"))
    assert unknown.value.status == 400 and "no element 'nickname'" in unknown.value.diagnostics
    with pytest.raises(FhirError) as unsupported:
        apply(PATIENT, operation("delete", "Patient.name.select(given)"))
    assert unsupported.value.status == 400 and "select()" in unsupported.value.diagnostics
    with pytest.raises(FhirError) as exists:
        apply(PATIENT, operation("add", "Patient", name="gender", value_Code="female"))
    assert exists.value.status == 422 and "already exists" in exists.value.diagnostics
    with pytest.raises(FhirError) as past_end:
        apply(PATIENT, operation("insert", "Patient.name", index=5, value_HumanName={"family": "X"}))
    assert past_end.value.status == 422
    with pytest.raises(FhirError) as bad_type:
        compile_fhirpath_patch(fhirpath_patch(operation("frobnicate", "Patient.name")))
    assert bad_type.value.status == 400


# --- over HTTP ---------------------------------------------------------------------------------------------

async def test_json_patch(client):
    created = await make_patient(client)
    ops = [{"op": "replace", "path": "/name/0/family", "value": "Smith"},
           {"op": "add", "path": "/name/0/given/-", "value": "Junior"},
           {"op": "remove", "path": "/gender"}]
    response = await client.patch(f"/Patient/{created['id']}", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"][0]["family"] == "Smith" and body["name"][0]["given"][-1] == "Junior"
    assert "gender" not in body and body["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'


async def test_json_patch_keeps_decimals_exact(client):
    raw = (b'{"resourceType":"Observation","status":"final","code":{"text":"weight"},'
           b'"valueQuantity":{"value":72.50,"unit":"kg"}}')
    created = (await client.post("/Observation", content=raw, headers=FHIR_JSON)).json()
    response = await client.patch(f"/Observation/{created['id']}", headers=JSON_PATCH,
                                  content=b'[{"op":"replace","path":"/status","value":"amended"}]')
    assert response.status_code == 200, response.text
    assert b'"value":72.50' in response.content


async def test_fhirpath_patch_over_http(client):
    created = await make_patient(client)
    patch = fhirpath_patch(operation("replace", "Patient.name.where(use='official').family", value_String="Smith"))
    response = await client.patch(f"/Patient/{created['id']}", json=patch, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["name"][0]["family"] == "Smith"


async def test_patch_producing_invalid_resource_is_422_and_changes_nothing(client):
    created = await make_patient(client)
    bad_json = [{"op": "replace", "path": "/gender", "value": 12}]
    response = await client.patch(f"/Patient/{created['id']}", json=bad_json, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    assert any("gender" in " ".join(i.get("expression", [])) + i["diagnostics"] for i in response.json()["issue"])
    bad_fhirpath = fhirpath_patch(operation("add", "Patient", name="foo", value_String="x"))
    response = await client.patch(f"/Patient/{created['id']}", json=bad_fhirpath, headers=FHIR_JSON)
    assert response.status_code == 400, response.text
    drop_required = fhirpath_patch(operation("delete", "Patient.identifier.system"),
                                   operation("add", "Patient", name="link", value_BackboneElement={"type": "seealso"}))
    response = await client.patch(f"/Patient/{created['id']}", json=drop_required, headers=FHIR_JSON)
    assert response.status_code == 422, response.text
    changes_id = [{"op": "replace", "path": "/id", "value": "other"}]
    response = await client.patch(f"/Patient/{created['id']}", json=changes_id, headers=JSON_PATCH)
    assert response.status_code == 422, response.text
    read = await client.get(f"/Patient/{created['id']}")
    assert read.json() == created


async def test_patch_missing_path_is_422_naming_it(client):
    created = await make_patient(client)
    response = await client.patch(f"/Patient/{created['id']}", headers=JSON_PATCH,
                                  json=[{"op": "remove", "path": "/telecom/0"}])
    assert response.status_code == 422, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["/telecom/0"] and "operation 0" in issue["diagnostics"]
    response = await client.patch(f"/Patient/{created['id']}", headers=JSON_PATCH,
                                  json=[{"op": "test", "path": "/gender", "value": "female"}])
    assert response.status_code == 422 and "test failed" in response.text


async def test_malformed_patches(client):
    created = await make_patient(client)
    url = f"/Patient/{created['id']}"
    assert (await client.patch(url, json=[{"op": "jump", "path": "/x"}], headers=JSON_PATCH)).status_code == 400
    assert (await client.patch(url, json={"op": "add"}, headers=JSON_PATCH)).status_code == 400
    assert (await client.patch(url, content=b"[", headers=JSON_PATCH)).status_code == 400
    assert (await client.patch(url, json=PATIENT, headers=FHIR_JSON)).status_code == 400  # not Parameters
    assert (await client.patch(url, content=b"x", headers={"Content-Type": "text/plain"})).status_code == 415
    assert (await client.patch("/Patient/unknown", json=[], headers=JSON_PATCH)).status_code == 404


async def test_patch_if_match(client):
    created = await make_patient(client)
    ops = [{"op": "replace", "path": "/active", "value": False}]
    stale = await client.patch(f"/Patient/{created['id']}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"9"'})
    assert stale.status_code == 412, stale.text
    fresh = await client.patch(f"/Patient/{created['id']}", json=ops, headers={**JSON_PATCH, "If-Match": 'W/"1"'})
    assert fresh.status_code == 200, fresh.text


async def test_conditional_patch(client):
    created = await make_patient(client)
    ops = [{"op": "replace", "path": "/active", "value": False}]
    url = "/Patient?identifier=http://hospital.test/mrn|p1"
    response = await client.patch(url, json=ops, headers=JSON_PATCH)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == created["id"] and response.json()["active"] is False
    assert (await client.patch("/Patient?identifier=http://hospital.test/mrn|none", json=ops,
                               headers=JSON_PATCH)).status_code == 404
    await make_patient(client)
    assert (await client.patch(url, json=ops, headers=JSON_PATCH)).status_code == 412


async def test_fhirpath_patch_paths_are_fhirpath(client):
    """Paths are evaluated by the FHIRPath core: where() takes any criterion it compiles, typed by the model."""
    contained = [{"resourceType": "Organization", "id": "o1", "name": "Old"}]
    created = await make_patient(client, contained=contained,
                                 managingOrganization={"reference": "#o1"})
    url = f"/Patient/{created['id']}"
    response = await client.patch(url, headers=FHIR_JSON, json=fhirpath_patch(
        operation("replace", "Patient.name.given.where($this = 'Jim')", value_String="Jimmy"),
        operation("replace", "Patient.name.where(use = 'nickname' or family.exists().not()).use", value_Code="old"),
        operation("replace", "Patient.contained.where(id = 'o1').name", value_String="New"),
        operation("add", "Patient.name.last()", name="family", value_String="Chalmers")))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"][1] == {"use": "old", "given": ["Jimmy"], "family": "Chalmers"}
    assert body["contained"][0]["name"] == "New"
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "bp"}, "component": [
        {"code": {"text": "systolic"}, "valueQuantity": {"value": 120}},
        {"code": {"text": "note"}, "valueString": "fine"}]}
    created = (await client.post("/Observation", json=observation, headers=FHIR_JSON)).json()
    response = await client.patch(f"/Observation/{created['id']}", headers=FHIR_JSON, json=fhirpath_patch(
        operation("delete", "Observation.component.where(value = 'fine')")))  # a choice element by its base name
    assert response.status_code == 200, response.text
    assert [c["code"]["text"] for c in response.json()["component"]] == ["systolic"]


async def test_fhirpath_patch_path_naming_no_element_is_400_whatever_the_resource_holds(client):
    created = await make_patient(client)  # no contact
    response = await client.patch(f"/Patient/{created['id']}", headers=FHIR_JSON,
                                  json=fhirpath_patch(operation("delete", "Patient.contact.nickname")))
    assert response.status_code == 400, response.text
    assert "no element 'nickname' on Patient.contact" in response.json()["issue"][0]["diagnostics"]


def test_fhirpath_patch_comparison_with_nothing_is_empty():
    """FHIRPath: `use != 'official'` is empty, not true, for a name without use; where() keeps only true."""
    patient = {**PATIENT, "name": [{"use": "official", "family": "A"}, {"family": "B"}]}
    assert select("Patient.name.where(use != 'official')", patient) == []
    assert [n.value for n in select("Patient.name.where(use.exists().not())", patient)] == [{"family": "B"}]


# --- what a patch leaves, and patches that change nothing -----------------------------------------------------

def test_compiled_fhirpath_patch_applies_again_the_same():
    """A patch is applied again when a concurrent write wins: its values must not have been changed in place."""
    patch = compile_fhirpath_patch(fhirpath_patch(
        operation("add", "Patient", name="contact", value_BackboneElement={"name": {"text": "Ann"}}),
        operation("add", "Patient.contact[0]", name="gender", value_Code="female")))
    first, second = copy.deepcopy(PATIENT), copy.deepcopy(PATIENT)
    patch.apply(first, Budget.of(first, Limits(), "Patient/1"))
    patch.apply(second, Budget.of(second, Limits(), "Patient/1"))
    assert first == second and first["contact"] == [{"name": {"text": "Ann"}, "gender": "female"}]


async def test_fhirpath_delete_removes_the_parents_it_empties(client):
    contacts = [{"name": {"text": "Ann"}, "gender": "female"}, {"name": {"text": "Bob"}}]
    created = await make_patient(client, contact=contacts)
    url = f"/Patient/{created['id']}"
    response = await client.patch(url, json=fhirpath_patch(operation("delete", "Patient.contact[0].name.text")),
                                  headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert response.json()["contact"] == [{"gender": "female"}, {"name": {"text": "Bob"}}]
    response = await client.patch(url, headers=FHIR_JSON, json=fhirpath_patch(
        operation("delete", "Patient.contact[1].name.text"), operation("delete", "Patient.contact[0].gender")))
    assert response.status_code == 200, response.text
    assert "contact" not in response.json()  # each contact emptied, then the list
    # JSON Patch is exact (RFC 6902): a remove that leaves an empty object is refused, naming it
    created = await make_patient(client, contact=contacts)
    response = await client.patch(f"/Patient/{created['id']}", headers=JSON_PATCH,
                                  json=[{"op": "remove", "path": "/contact/0/name/text"}])
    assert response.status_code == 422, response.text
    assert response.json()["issue"][0]["expression"] == ["Patient.contact[0].name"]


async def test_a_patch_that_changes_nothing_writes_no_version(client):
    created = await make_patient(client)
    url = f"/Patient/{created['id']}"
    nothing = [(fhirpath_patch(), FHIR_JSON), ({"resourceType": "Parameters"}, FHIR_JSON), ([], JSON_PATCH),
               ([{"op": "test", "path": "/gender", "value": "male"}], JSON_PATCH),
               ({}, {"Content-Type": "application/merge-patch+json"})]
    for patch, headers in nothing:
        response = await client.patch(url, json=patch, headers={**headers, "If-Match": 'W/"1"'})
        assert response.status_code == 200, (patch, response.text)
        assert response.json() == created and response.headers["etag"] == 'W/"1"'
    response = await client.patch("/Patient?identifier=http://hospital.test/mrn|p1", json=fhirpath_patch(),
                                  headers=FHIR_JSON)
    assert response.status_code == 200 and response.json() == created, response.text
    assert (await client.get(f"{url}/_history")).json()["total"] == 1
    failing = [{"op": "test", "path": "/gender", "value": "female"}]  # its tests still run
    assert (await client.patch(url, json=failing, headers=JSON_PATCH)).status_code == 422
