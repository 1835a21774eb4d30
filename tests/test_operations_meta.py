"""$meta, $meta-add and $meta-delete at HTTP level on both backends: tags, security labels and profiles changed in
place (same version, same lastUpdated, the search index current), and scope-checked."""

from __future__ import annotations

from conftest import FHIR_JSON
from security_helpers import secured

__all__ = ["secured"]  # a fixture, used by name

TAGS = "http://example.org/tags"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PROFILE = "http://hl7.org/fhir/StructureDefinition/Patient"


def meta_parameters(meta: dict) -> dict:
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def returned(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["resourceType"] == "Parameters" and body["parameter"][0]["name"] == "return"
    return body["parameter"][0]["valueMeta"]


async def test_meta_add_and_delete_change_labels_without_a_new_version(client):
    created = (await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1", "meta": {
        "tag": [{"system": TAGS, "code": "old"}]}}, headers=FHIR_JSON)).json()
    await client.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2"}, headers=FHIR_JSON)
    added = returned(await client.post("/Patient/p1/$meta-add", headers=FHIR_JSON, json=meta_parameters({
        "tag": [{"system": TAGS, "code": "new"}, {"system": TAGS, "code": "old"}],
        "security": [{"system": CONF, "code": "R"}], "profile": [PROFILE]})))
    assert [t["code"] for t in added["tag"]] == ["old", "new"] and added["profile"] == [PROFILE]
    read = await client.get("/Patient/p1")
    stored = read.json()["meta"]
    assert stored["versionId"] == "1" and stored["lastUpdated"] == created["meta"]["lastUpdated"]
    assert read.headers["etag"] == 'W/"1"' and {t["code"] for t in stored["tag"]} == {"old", "new"}
    history = (await client.get("/Patient/p1/_history")).json()
    assert len(history["entry"]) == 1 and {t["code"] for t in history["entry"][0]["resource"]["meta"]["tag"]} == {
        "old", "new"}
    found = (await client.get("/Patient", params={"_tag": f"{TAGS}|new"})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p1"]
    assert [e["resource"]["id"] for e in (await client.get("/Patient", params={"_security": f"{CONF}|R"})).json()[
        "entry"]] == ["p1"]
    assert [e["resource"]["id"] for e in (await client.get("/Patient", params={"_profile": PROFILE})).json()[
        "entry"]] == ["p1"]
    deleted = returned(await client.post("/Patient/p1/$meta-delete", headers=FHIR_JSON, json=meta_parameters({
        "tag": [{"system": TAGS, "code": "old"}], "profile": [PROFILE]})))
    assert deleted == {"security": [{"system": CONF, "code": "R"}], "tag": [{"system": TAGS, "code": "new"}]}
    assert "entry" not in (await client.get("/Patient", params={"_tag": f"{TAGS}|old"})).json()
    assert "entry" not in (await client.get("/Patient", params={"_profile": PROFILE})).json()
    # an update afterwards is version 2 and keeps nothing it does not say
    updated = (await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=FHIR_JSON)).json()
    assert updated["meta"]["versionId"] == "2" and "tag" not in updated["meta"]
    assert (await client.post("/Patient/p1/$meta-add", headers=FHIR_JSON, json={"resourceType": "Parameters"})
            ).status_code == 400
    assert (await client.post("/Patient/nobody/$meta-add", headers=FHIR_JSON,
                              json=meta_parameters({"tag": [{"code": "x"}]}))).status_code == 404


async def test_meta_reads_instance_type_and_system(client):
    await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1", "meta": {
        "tag": [{"system": TAGS, "code": "a"}]}}, headers=FHIR_JSON)
    await client.put("/Patient/p2", json={"resourceType": "Patient", "id": "p2", "meta": {
        "tag": [{"system": TAGS, "code": "b"}, {"system": TAGS, "code": "a"}], "profile": [PROFILE]}},
                     headers=FHIR_JSON)
    await client.put("/Observation/o1", json={"resourceType": "Observation", "id": "o1", "status": "final",
                                              "code": {"text": "x"}, "meta": {"security": [{"system": CONF,
                                                                                            "code": "N"}]}},
                     headers=FHIR_JSON)
    assert returned(await client.get("/Patient/p1/$meta")) == {"tag": [{"system": TAGS, "code": "a"}]}
    of_type = returned(await client.get("/Patient/$meta"))
    assert sorted(t["code"] for t in of_type["tag"]) == ["a", "b"] and of_type["profile"] == [PROFILE]
    assert "security" not in of_type
    everywhere = returned(await client.get("/$meta"))
    assert everywhere["security"] == [{"system": CONF, "code": "N"}] and len(everywhere["tag"]) == 2


async def test_meta_changes_need_an_update_scope(secured):
    client = secured.client
    body = meta_parameters({"tag": [{"system": TAGS, "code": "x"}]})
    reader = await secured.token("patient/Patient.rs", patient="p1")
    assert returned(await client.get("/Patient/p1/$meta", headers=reader)) == {}
    assert (await client.get("/Patient/p2/$meta", headers=reader)).status_code == 404
    assert (await client.post("/Patient/p1/$meta-add", json=body, headers={**FHIR_JSON, **reader})).status_code == 403
    writer = await secured.token("patient/Patient.rus", patient="p1")
    assert (await client.post("/Patient/p2/$meta-add", json=body, headers={**FHIR_JSON, **writer})).status_code == 404
    assert returned(await client.post("/Patient/p1/$meta-add", json=body, headers={**FHIR_JSON, **writer}))["tag"]
    system = await secured.token("system/*.cruds", name="seeder")
    assert (await client.get("/Patient/p2", headers=system)).json()["meta"].get("tag") is None


async def test_meta_operations_on_an_earlier_version_change_only_that_version(client):
    await client.put("/Patient/h1", json={"resourceType": "Patient", "id": "h1", "gender": "male"}, headers=FHIR_JSON)
    await client.put("/Patient/h1", json={"resourceType": "Patient", "id": "h1", "gender": "female"},
                     headers=FHIR_JSON)
    added = returned(await client.post("/Patient/h1/_history/1/$meta-add", headers=FHIR_JSON,
                                       json=meta_parameters({"tag": [{"system": TAGS, "code": "reviewed"}]})))
    assert added == {"tag": [{"system": TAGS, "code": "reviewed"}]}
    assert returned(await client.get("/Patient/h1/_history/1/$meta")) == added
    first = (await client.get("/Patient/h1/_history/1")).json()
    assert first["gender"] == "male" and first["meta"]["versionId"] == "1" and first["meta"]["tag"] == added["tag"]
    current = (await client.get("/Patient/h1")).json()
    assert current["meta"]["versionId"] == "2" and "tag" not in current["meta"]
    assert returned(await client.get("/Patient/h1/$meta")) == {}
    assert "entry" not in (await client.get("/Patient", params={"_tag": f"{TAGS}|reviewed"})).json()  # index: v2
    assert returned(await client.post("/Patient/h1/_history/1/$meta-delete", headers=FHIR_JSON,
                                      json=meta_parameters({"tag": [{"system": TAGS, "code": "reviewed"}]}))) == {}
    assert "tag" not in (await client.get("/Patient/h1/_history/1")).json()["meta"]
    # the current version by its number: the search index follows
    returned(await client.post("/Patient/h1/_history/2/$meta-add", headers=FHIR_JSON,
                               json=meta_parameters({"tag": [{"system": TAGS, "code": "now"}]})))
    assert [e["resource"]["id"] for e in (await client.get("/Patient", params={"_tag": f"{TAGS}|now"})).json()[
        "entry"]] == ["h1"]
    assert (await client.get("/Patient/h1/_history/9/$meta")).status_code == 404
    await client.delete("/Patient/h1")
    assert (await client.post("/Patient/h1/_history/3/$meta-add", headers=FHIR_JSON,
                              json=meta_parameters({"tag": [{"code": "x"}]}))).status_code == 410
    everything = await client.get("/Patient/h1/_history/1/$everything")
    assert everything.status_code == 400 and everything.json()["resourceType"] == "OperationOutcome"
