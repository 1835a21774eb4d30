"""SMART scopes at the HTTP level, on both backends: for each interaction and scope form, what the caller may do and
what it may not, with hidden resources answering exactly as absent ones (reads, searches, counts, includes, chains,
_has, history, batches and transactions)."""

from __future__ import annotations

from security_helpers import FHIR_JSON, LAB, ids, observation, secured  # noqa: F401 (fixture)


async def test_without_a_token_only_the_public_endpoints_answer(secured):
    client = secured.client
    refused = await client.get("/Patient/p1")
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["issue"][0]["code"] == "login"
    assert (await client.post("/Patient", json={"resourceType": "Patient"}, headers=FHIR_JSON)).status_code == 401
    assert (await client.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": []},
                              headers=FHIR_JSON)).status_code == 401
    metadata = (await client.get("/metadata")).json()
    security = metadata["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris["token"].endswith("/auth/token")
    smart = (await client.get("/.well-known/smart-configuration")).json()
    assert smart["token_endpoint"] == uris["token"] and "permission-v2" in smart["capabilities"]
    bad = await client.get("/Patient/p1", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]


async def test_patient_scope_confines_reads_to_the_launch_patient(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.rs patient/Patient.rs", patient="p1")
    assert (await client.get("/Observation/o1-lab", headers=auth)).status_code == 200
    assert (await client.get("/Patient/p1", headers=auth)).status_code == 200
    for url in ("/Observation/o2-lab", "/Observation/o2-lab/_history/1", "/Patient/p2", "/Observation/o2-lab/_history"):
        hidden = await client.get(url, headers=auth)
        absent = await client.get(url.replace("2", "9"), headers=auth)
        assert hidden.status_code == absent.status_code == 404, url  # exactly as absent: 403 would say it exists
        assert hidden.json()["issue"][0]["code"] == absent.json()["issue"][0]["code"] == "not-found"
    searched = (await client.get("/Observation", params={"_total": "accurate"}, headers=auth)).json()
    assert ids(searched) == {"o1-lab", "o1-vital"} and searched["total"] == 2
    counted = (await client.get("/Observation", params={"_summary": "count"}, headers=auth)).json()
    assert counted["total"] == 2
    patients = (await client.get("/Patient", params={"gender": "female", "_total": "accurate"}, headers=auth)).json()
    assert ids(patients) == {"p1"} and patients["total"] == 1
    compartment = (await client.get("/Patient/p2/Observation", headers=auth)).json()
    assert ids(compartment) == set()
    typed = (await client.get("/", params={"_type": "Observation"}, headers=auth)).json()
    assert ids(typed) == {"o1-lab", "o1-vital"}


async def test_includes_chains_and_has_reach_only_what_the_caller_may_search(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.rs patient/Patient.rs", patient="p1")
    included = (await client.get("/Observation", params={"_include": "Observation:subject"}, headers=auth)).json()
    assert ids(included) == {"o1-lab", "o1-vital", "p1"}
    revincluded = (await client.get("/Patient", params={"_revinclude": "Observation:subject"}, headers=auth)).json()
    assert ids(revincluded) == {"p1", "o1-lab", "o1-vital"}
    chained = (await client.get("/Observation", params={"subject:Patient.name": "Two"}, headers=auth)).json()
    assert ids(chained) == set()
    # Practitioner is not granted: a chain through it matches nothing, and an include of it brings nothing
    through = (await client.get("/Observation", params={"performer:Practitioner.name": "House"}, headers=auth)).json()
    assert ids(through) == set()
    no_practitioner = (await client.get("/Observation", params={"_include": "Observation:performer"},
                                        headers=auth)).json()
    assert "dr" not in ids(no_practitioner)
    # _has over another patient's data: p2 is not in the caller's compartment
    has = (await client.get("/Patient", params={"_has:Observation:subject:code": "8867-4"}, headers=auth)).json()
    assert ids(has) == {"p1"}
    # granular: lab results only, so _has cannot reveal that p1 has a vital sign
    lab_only = await secured.token(f"patient/Observation.rs?category={LAB} patient/Patient.rs", patient="p1")
    hidden_has = (await client.get("/Patient", params={"_has:Observation:subject:code": "8310-5"},
                                   headers=lab_only)).json()
    assert ids(hidden_has) == set()
    shown_has = (await client.get("/Patient", params={"_has:Observation:subject:code": "8867-4"},
                                  headers=lab_only)).json()
    assert ids(shown_has) == {"p1"}


async def test_shared_reference_data_is_readable_with_a_patient_scope(secured):
    client = secured.client
    auth = await secured.token("patient/Practitioner.rs patient/Observation.rs", patient="p1")
    assert (await client.get("/Practitioner/dr", headers=auth)).status_code == 200
    through = (await client.get("/Observation", params={"performer:Practitioner.name": "House"}, headers=auth)).json()
    assert ids(through) == {"o1-lab", "o1-vital"}


async def test_granular_scope_restricts_reads_and_searches(secured):
    client = secured.client
    auth = await secured.token(f"patient/Observation.rs?category={LAB}", patient="p1")
    assert (await client.get("/Observation/o1-lab", headers=auth)).status_code == 200
    assert (await client.get("/Observation/o1-vital", headers=auth)).status_code == 404
    searched = (await client.get("/Observation", params={"_total": "accurate"}, headers=auth)).json()
    assert ids(searched) == {"o1-lab"} and searched["total"] == 1
    both = await secured.token(f"patient/Observation.rs?category={LAB} "
                               f"patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
                               "observation-category|vital-signs", patient="p1")
    assert ids((await client.get("/Observation", headers=both)).json()) == {"o1-lab", "o1-vital"}


async def test_a_type_not_granted_is_403_and_write_never_implies_read(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.c", patient="p1")
    assert (await client.get("/Patient/p1", headers=auth)).status_code == 403
    assert (await client.get("/Observation/o1-lab", headers=auth)).status_code == 403
    assert (await client.get("/Observation", headers=auth)).status_code == 403
    created = await client.post("/Observation", json=observation("x", "p1", "laboratory"),
                                headers={**FHIR_JSON, **auth})
    assert created.status_code == 201


async def test_writes_are_confined_like_reads(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.cruds", patient="p1")
    headers = {**FHIR_JSON, **auth}
    assert (await client.post("/Observation", json=observation("x", "p1", "laboratory"),
                              headers=headers)).status_code == 201
    refused = await client.post("/Observation", json=observation("x", "p2", "laboratory"), headers=headers)
    assert refused.status_code == 403
    moved = observation("o1-lab", "p2", "laboratory")  # moving one's own resource out of the compartment
    assert (await client.put("/Observation/o1-lab", json=moved, headers=headers)).status_code == 403
    other = observation("o2-lab", "p2", "laboratory")
    assert (await client.put("/Observation/o2-lab", json=other, headers=headers)).status_code == 404
    assert (await client.delete("/Observation/o2-lab", headers=auth)).status_code == 404
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    assert (await client.patch("/Observation/o2-lab", json=patch,
                               headers={**auth, "Content-Type": "application/json-patch+json"})).status_code == 404
    admin = await secured.token("system/*.rs", name="reader")
    assert (await client.get("/Observation/o2-lab", headers=admin)).json()["status"] == "final"
    read_only = await secured.token("patient/Observation.rs", patient="p1")
    assert (await client.delete("/Observation/o1-lab", headers=read_only)).status_code == 403


async def test_conditional_interactions_search_only_what_the_caller_sees(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.crus", patient="p1")
    headers = {**FHIR_JSON, **auth}
    # o2-lab matches this condition but is hidden: the conditional update creates (nothing of p2's is touched)
    body = observation("new", "p1", "laboratory")
    del body["id"]
    updated = await client.put("/Observation", params={"_id": "o2-lab"}, json=body, headers=headers)
    assert updated.status_code == 201
    admin = await secured.token("system/*.rs", name="reader")
    assert (await client.get("/Observation/o2-lab", headers=admin)).json()["subject"]["reference"] == "Patient/p2"
    no_search = await secured.token("patient/Observation.cu", patient="p1")
    refused = await client.put("/Observation", params={"code": "1"}, json=body, headers={**FHIR_JSON, **no_search})
    assert refused.status_code == 403


async def test_batch_entries_are_checked_one_by_one_and_a_transaction_whole(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.cruds", patient="p1")
    headers = {**FHIR_JSON, **auth}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o1-lab"}},
        {"request": {"method": "GET", "url": "Observation/o2-lab"}},
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "GET", "url": "Observation?code=8867-4"}}]}
    answered = (await client.post("/", json=batch, headers=headers)).json()
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["200", "404", "403", "200"]
    assert ids(answered["entry"][3]["resource"]) == {"o1-lab"}
    mine, theirs = observation("t1", "p1", "laboratory"), observation("t2", "p2", "laboratory")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "PUT", "url": "Observation/t1"}, "resource": mine},
        {"request": {"method": "PUT", "url": "Observation/t2"}, "resource": theirs}]}
    failed = await client.post("/", json=transaction, headers=headers)
    assert failed.status_code == 403
    admin = await secured.token("system/*.rs", name="reader")
    assert (await client.get("/Observation/t1", headers=admin)).status_code == 404  # nothing of it stored


async def test_history_hides_what_the_caller_may_not_see(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.rs", patient="p1")
    typed = (await client.get("/Observation/_history", headers=auth)).json()
    assert ids(typed) == {"o1-lab", "o1-vital"} and "total" not in typed
    assert (await client.get("/_history", headers=auth)).status_code == 403  # needs a */ scope
    everything = await secured.token("system/*.rs", name="reader")
    assert (await client.get("/_history", headers=everything)).json()["total"] == 7


async def test_v1_scopes(secured):
    client = secured.client
    reader = await secured.token("user/*.read")
    assert (await client.get("/Observation/o2-lab", headers=reader)).status_code == 200
    assert (await client.post("/Observation", json=observation("x", "p1", "laboratory"),
                              headers={**FHIR_JSON, **reader})).status_code == 403
    writer = await secured.token("user/Observation.write user/Observation.read")
    assert (await client.post("/Observation", json=observation("x", "p2", "laboratory"),
                              headers={**FHIR_JSON, **writer})).status_code == 201


async def test_an_element_mask_applies_to_everything_the_client_receives(secured):
    client = secured.client
    auth = await secured.token("system/*.rs", mask=("Patient.name",), name="analytics")
    read = (await client.get("/Patient/p1", headers=auth)).json()
    assert "name" not in read and read["gender"] == "female"
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} \
        in read["meta"]["tag"]
    searched = (await client.get("/Observation", params={"_include": "Observation:subject"}, headers=auth)).json()
    patients = [e["resource"] for e in searched["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patients and all("name" not in p for p in patients)
    history = (await client.get("/Patient/p1/_history", headers=auth)).json()
    assert all("name" not in e["resource"] for e in history["entry"])


async def test_each_write_interaction_within_the_compartment(secured):
    client = secured.client
    auth = await secured.token("patient/Observation.cruds", patient="p1")
    headers = {**FHIR_JSON, **auth}
    assert (await client.get("/Observation/o1-lab/_history/1", headers=auth)).status_code == 200
    amended = {**observation("o1-lab", "p1", "laboratory"), "status": "amended"}
    assert (await client.put("/Observation/o1-lab", json=amended, headers=headers)).status_code == 200
    patch = [{"op": "replace", "path": "/status", "value": "corrected"}]
    patched = await client.patch("/Observation/o1-lab", json=patch,
                                 headers={**auth, "Content-Type": "application/json-patch+json"})
    assert patched.status_code == 200 and patched.json()["status"] == "corrected"
    history = (await client.get("/Observation/o1-lab/_history", headers=auth)).json()
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    # a conditional delete matches only what the caller may search: o2-vital has the code too, and stays
    assert (await client.delete("/Observation", params={"code": "8310-5"}, headers=auth)).status_code == 204
    admin = await secured.token("system/*.rs", name="reader")
    assert (await client.get("/Observation/o1-vital", headers=admin)).status_code == 410
    # a deleted resource's owner cannot be told from its tombstone: a restricted caller gets 404, like a stranger
    assert (await client.get("/Observation/o1-vital", headers=auth)).status_code == 404
    assert (await client.get("/Observation/o2-vital", headers=admin)).status_code == 200
    assert (await client.delete("/Observation/o1-lab", headers=auth)).status_code == 204
