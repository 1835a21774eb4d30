"""The TestScript runner's parts, without a server: paths, asserts, variables, requests, loading, reports."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from hearth.capability import fhir_xml
from hearth.capability.validation import validate_resource
from hearth.conformance import asserts
from hearth.conformance.client import Client, Exchange
from hearth.conformance.operations import OperationError, build_request
from hearth.conformance.paths import PathError, evaluate_path
from hearth.conformance.report import AssertRecord, build_report, summary_table
from hearth.conformance.report import ScriptResult
from hearth.conformance.script import Fixture, Script, ScriptError, find_scripts, load_script
from hearth.conformance.session import Session
from tests.test_conformance import SUITES

BASE = "http://fhir.test/r4"
PATIENT = {"resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"}, "active": True,
           "name": [{"family": "Chalmers", "given": ["Peter", "James"]}], "birthDate": "1974-12-25"}
BUNDLE = {"resourceType": "Bundle", "type": "searchset", "total": 1,
          "link": [{"relation": "self", "url": f"{BASE}/Patient"}],
          "entry": [{"resource": PATIENT}]}


def _session(**fixtures) -> Session:
    script = Script(Path("/x/script.json"), {"resourceType": "TestScript", "id": "t", "variable": [
        {"name": "loc", "headerField": "Location", "sourceId": "created"},
        {"name": "family", "path": "fhir:Patient/fhir:name/fhir:family/@value", "sourceId": "patient"},
        {"name": "total", "expression": "Bundle.total", "sourceId": "bundle"},
        {"name": "fallback", "expression": "Patient.nothing", "sourceId": "patient", "defaultValue": "dflt"},
        {"name": "asked"}]})
    script.fixtures = {key: Fixture(value, key) for key, value in fixtures.items()}
    return Session(script, {1: BASE, 2: "http://other.test"}, {"asked": "given"})


def _exchange(status: int = 200, resource: dict | None = None, **headers: str) -> Exchange:
    exchange = Exchange("GET", f"{BASE}/Patient/p1", {"Accept": "application/fhir+xml"}, None, status,
                        {"content-type": "application/fhir+json; charset=utf-8", **headers})
    exchange._resource = resource  # as parsed from the body
    return exchange


@pytest.mark.parametrize("path, expected", [
    ("fhir:Patient/fhir:name/fhir:family/@value", ["Chalmers"]),
    ("Patient/name/given", ["Peter", "James"]),
    ("fhir:Patient/fhir:name/fhir:given[2]/@value", ["James"]),
    ("Patient/active/@value", [True]),
    ("fhir:Bundle/fhir:entry/fhir:resource/fhir:Patient/fhir:id/@value", ["p1"]),
    ("Bundle/type", ["searchset"]),
    ("fhir:Patient/fhir:telecom/@value", []),
])
def test_xpath_subset(path, expected):
    resource = BUNDLE if "Bundle" in path else PATIENT
    assert evaluate_path(resource, path) == expected


def test_unsupported_xpath_is_an_error():
    with pytest.raises(PathError):
        evaluate_path(PATIENT, "//fhir:name[fhir:family='x']")


def test_variables_from_headers_paths_expressions_defaults_and_the_command_line():
    session = _session(patient=PATIENT, bundle=BUNDLE)
    session.record(_exchange(201, PATIENT, location=f"{BASE}/Patient/p1/_history/1"), "created", None)
    assert session.substitute("${loc}") == f"{BASE}/Patient/p1/_history/1"
    assert session.substitute("?family=${family}&n=${total}") == "?family=Chalmers&n=1"
    assert session.value("fallback") == "dflt" and session.value("asked") == "given"
    assert session.substitute("${undefined}") == "${undefined}"


def _check(assertion: dict, session: Session, profiles: dict | None = None) -> str:
    return asserts.evaluate({"warningOnly": False, **assertion}, session, profiles or {}).result


def test_response_asserts():
    session = _session()
    session.record(_exchange(200, PATIENT, **{"last-modified": "Tue, 24 Nov 2026 18:00:00 GMT"}), None, None)
    assert _check({"response": "okay"}, session) == "pass"
    assert _check({"response": "notFound"}, session) == "fail"
    assert _check({"responseCode": "200,204", "operator": "in"}, session) == "pass"
    assert _check({"responseCode": "404", "operator": "notEquals"}, session) == "pass"
    assert _check({"contentType": "json"}, session) == "pass"
    assert _check({"contentType": "xml"}, session) == "fail"
    assert _check({"contentType": "application/fhir+json"}, session) == "pass"
    assert _check({"headerField": "Last-Modified", "operator": "notEmpty"}, session) == "pass"
    assert _check({"headerField": "ETag", "operator": "notEmpty"}, session) == "fail"
    assert _check({"headerField": "ETag", "operator": "notEmpty", "warningOnly": True}, session) == "warning"
    assert _check({"direction": "request", "headerField": "Accept", "operator": "contains", "value": "xml"},
                  session) == "pass"
    assert _check({"requestMethod": "get"}, session) == "pass"
    assert _check({"resource": "Patient"}, session) == "pass"
    assert _check({"resource": "Bundle"}, session) == "fail"


def test_path_and_expression_asserts():
    session = _session(bundle=BUNDLE)
    session.record(_exchange(200, PATIENT), None, None)
    assert _check({"path": "fhir:Patient/fhir:name/fhir:family/@value", "value": "Chalmers"}, session) == "pass"
    assert _check({"expression": "Patient.name.given.count()", "operator": "greaterThan", "value": "1"},
                  session) == "pass"
    assert _check({"expression": "Patient.name.given.count()", "operator": "lessThan", "value": "2"},
                  session) == "fail"
    assert _check({"expression": "Patient.active and Patient.birthDate < @1980-01-01"}, session) == "pass"
    assert _check({"expression": "Patient.deceased.exists()"}, session) == "fail"
    assert _check({"expression": "Patient.telecom", "operator": "empty"}, session) == "pass"
    assert _check({"expression": "Bundle.total", "value": "1", "sourceId": "bundle"}, session) == "pass"
    assert _check({"expression": "Patient.name.nosuchfunction()", "value": "1"}, session) == "error"
    assert _check({"expression": "Bundle.total", "sourceId": "nope", "value": "1"}, session) == "error"


def test_compare_to_source_minimum_id_and_profiles():
    changed = {**PATIENT, "name": [{"family": "Other"}]}
    minimum = {"resourceType": "Patient", "id": "ignored", "name": [{"family": "Chalmers"}]}
    session = _session(fixture=PATIENT, minimum=minimum)
    session.record(_exchange(200, PATIENT), None, None)
    same_given = {"compareToSourceId": "fixture", "compareToSourceExpression": "Patient.name.given"}
    assert _check(same_given, session) == "pass"
    assert _check({"compareToSourceId": "fixture", "compareToSourcePath": "Patient/name/family",
                   "path": "Patient/name/family"}, session) == "pass"
    assert _check({"minimumId": "minimum"}, session) == "pass"
    session.record(_exchange(200, changed), None, None)
    same_family = {"compareToSourceId": "fixture", "compareToSourceExpression": "Patient.name.family"}
    assert _check(same_family, session) == "fail"
    assert _check({"minimumId": "minimum"}, session) == "fail"
    profiles = {"patient": "http://hl7.org/fhir/StructureDefinition/Patient"}
    assert _check({"validateProfileId": "patient"}, session, profiles) == "pass"
    session.record(_exchange(200, {**PATIENT, "birthDate": "1974-13-45"}), None, None)
    assert _check({"validateProfileId": "patient"}, session, profiles) == "fail"
    assert _check({"validateProfileId": "unknown"}, session, profiles) == "error"


def test_navigation_links():
    session = _session()
    session.record(_exchange(200, BUNDLE), None, None)
    assert _check({"navigationLinks": True}, session) == "pass"
    session.record(_exchange(200, {**BUNDLE, "link": []}), None, None)
    assert _check({"navigationLinks": True}, session) == "fail"


def _op(code: str, **fields) -> dict:
    return {"type": {"code": code}, **fields}


def test_requests_for_each_operation_type():
    session = _session(patient=PATIENT, bundle={"resourceType": "Bundle", "type": "transaction"})
    assert build_request(_op("read", resource="Patient", params="/p1"), session, "json").url == f"{BASE}/Patient/p1"
    assert build_request(_op("read", targetId="patient"), session, "json").url == f"{BASE}/Patient/p1"
    assert build_request(_op("vread", targetId="patient"), session, "json").url == f"{BASE}/Patient/p1/_history/3"
    assert build_request(_op("history", targetId="patient"), session, "json").url == f"{BASE}/Patient/p1/_history"
    assert build_request(_op("history", resource="Patient"), session, "json").url == f"{BASE}/Patient/_history"
    assert build_request(_op("capabilities"), session, "json").url == f"{BASE}/metadata"
    search = build_request(_op("search", resource="Patient", params="?name=a b&given=${asked}&code=s|c"), session,
                           "json")
    assert search.url == f"{BASE}/Patient?name=a%20b&given=given&code=s%7Cc" and search.method == "GET"
    transaction = build_request(_op("transaction", sourceId="bundle"), session, "json")
    assert (transaction.method, transaction.url) == ("POST", BASE)
    other = build_request(_op("read", resource="Patient", params="/p1", destination=2), session, "json")
    assert other.url == "http://other.test/Patient/p1"
    delete = build_request(_op("delete", resource="Patient", params="?identifier=x"), session, "json")
    assert (delete.method, delete.url, delete.request_body) == ("DELETE", f"{BASE}/Patient?identifier=x", None)
    operation = build_request(_op("operation", url="Patient/p1/$everything"), session, "json")
    assert (operation.method, operation.url) == ("GET", f"{BASE}/Patient/p1/$everything")


def test_bodies_formats_and_headers():
    session = _session(patient=PATIENT)
    update = build_request(_op("update", resource="Patient", params="/other", sourceId="patient", contentType="xml",
                               accept="xml", requestHeader=[{"field": "If-Match", "value": 'W/"${asked}"'}]),
                           session, "json")
    assert update.method == "PUT" and update.url == f"{BASE}/Patient/other"
    assert update.request_headers["Content-Type"] == "application/fhir+xml"
    assert update.request_headers["Accept"] == "application/fhir+xml"
    assert update.request_headers["If-Match"] == 'W/"given"'
    # the body goes as XML, with the id of the URL it is PUT to
    assert fhir_xml.xml_to_json(update.request_body)["id"] == "other"
    create = build_request(_op("create", resource="Patient", sourceId="patient"), session, "json")
    assert create.request_headers["Content-Type"] == "application/fhir+json" and b'"Chalmers"' in create.request_body
    with pytest.raises(OperationError):
        build_request(_op("create", resource="Patient", sourceId="missing"), session, "json")
    with pytest.raises(OperationError):
        build_request(_op("read", targetId="missing"), session, "json")


def test_loading_xml_scripts_and_fixture_references():
    names = [path.name for path in find_scripts([str(SUITES)])]
    assert "read_testscript.xml" in names and "hl7.fhir.r4.examples-package.json" not in names
    assert "TestReport-testreport-example.json" not in names and not any("fixtures" in n for n in names)
    xml_script = load_script(SUITES / "crucible-testscript-engine" / "extra" / "read_testscript.xml")
    assert xml_script.resource["test"][0]["action"][0]["operation"]["accept"] == "xml"
    hl7 = load_script(SUITES / "hl7-r4-spec-examples" / "TestScript-testscript-example-update.json")
    assert hl7.fixtures["fixture-patient-update"].resource["id"] == "pat1"  # Patient/pat1 -> fixtures/Patient-pat1.json
    remote = load_script(SUITES / "crucible-testscript-engine" / "extra" / "testscript_fixture_test.json")
    assert remote.remote == {"fixture-patient-create": "http://hl7.org/fhir/patient-example.json"}
    with pytest.raises(ScriptError):
        find_scripts(["/no/such/folder"])


def test_xml_fixtures_and_contained_fixtures(tmp_path):
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "patient.xml").write_bytes(fhir_xml.json_to_xml(PATIENT))
    script = {"resourceType": "TestScript", "id": "x", "name": "x", "status": "active",
              "url": "http://example.org/x", "contained": [{"resourceType": "Organization", "id": "org"}],
              "fixture": [{"id": "from-xml", "autocreate": False, "autodelete": False,
                           "resource": {"reference": "fixtures/patient.xml"}},
                          {"id": "inline", "autocreate": False, "autodelete": False,
                           "resource": {"reference": "#org"}},
                          {"id": "on-server", "autocreate": False, "autodelete": False,
                           "resource": {"reference": "Patient/somewhere"}}]}
    (tmp_path / "script.xml").write_bytes(fhir_xml.json_to_xml(script))
    loaded = load_script(tmp_path / "script.xml")
    assert loaded.fixtures["from-xml"].resource == PATIENT
    assert loaded.fixtures["inline"].resource == {"resourceType": "Organization", "id": "org"}
    assert loaded.remote == {"on-server": "Patient/somewhere"}  # read from the server when the script runs


def test_test_report_is_valid_r4_and_summarised():
    script = Script(Path("/x/s.json"), {"resourceType": "TestScript", "id": "s", "name": "s"})
    records = [AssertRecord("test t", "a1", "", "pass", "ok"), AssertRecord("test t", "a2", "", "fail", "no"),
               AssertRecord("test t", "a3", "", "warning", "meh")]
    tests = [{"name": "t", "description": "", "action": [
        {"operation": {"result": "pass", "message": "GET"}},
        *({"assert": {"result": record.result, "message": record.message}} for record in records)]}]
    report = build_report(script, BASE, [], tests, [], records)
    validate_resource(report)
    assert report["result"] == "fail" and report["score"] == Decimal("66.7")
    table = summary_table([ScriptResult(script, report, records)])
    assert "| x/s.json " in table and "| **total**" in table


async def test_client_sends_default_headers_and_urls_as_given():
    from aiohttp import web

    seen: dict[str, str] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(request.headers)
        seen["raw_path"] = request.raw_path
        return web.Response(body=b'{"resourceType":"Patient","id":"p"}', content_type="application/fhir+json")

    application = web.Application()
    application.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with Client(headers={"Authorization": "Bearer t0k"}) as client:
            url = f"http://127.0.0.1:{port}/Patient?code=s%7Cc&x=%2F"
            exchange = await client.send(Exchange("GET", url, {"Accept": "application/fhir+json"}, None))
    finally:
        await runner.cleanup()
    assert seen["Authorization"] == "Bearer t0k" and seen["Accept"] == "application/fhir+json"
    assert seen["raw_path"] == "/Patient?code=s%7Cc&x=%2F"  # not re-quoted
    assert exchange.status == 200 and exchange.resource == {"resourceType": "Patient", "id": "p"}
