"""FHIR XML: the converter's round-trip fidelity, and XML over HTTP (Accept, Content-Type, _format)."""

from __future__ import annotations

import bz2
import tarfile
import xml.etree.ElementTree as ET
from decimal import Decimal

import pytest

from hearth.capability import fhir_json
from hearth.capability.fhir_xml import FhirXmlError, json_to_xml, xml_to_json
from tests.conftest import SHARED, SYNTHEA

FHIR = "{http://hl7.org/fhir}"
XML = {"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"}

PATIENT = {
    "resourceType": "Patient", "id": "p1",
    "text": {"status": "generated",
             "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter <b>James</b> &amp; co<br/>x &lt; y</p></div>'},
    "extension": [{"url": "http://example.org/ext", "valueDecimal": Decimal("72.50")},
                  {"url": "http://example.org/nested", "extension": [{"url": "a", "valueBoolean": True}]}],
    "active": True,
    "name": [{"id": "n1", "family": "Chalmers", "given": ["Peter", "James"],
              "_given": [None, {"extension": [{"url": "http://example.org/q", "valueCode": "MD"}]}]}],
    "birthDate": "1974-12-25",
    "_birthDate": {"id": "bd", "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                             "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
    "multipleBirthInteger": 2,
    "contained": [{"resourceType": "Organization", "id": "o1", "name": "Org"}],
    "managingOrganization": {"reference": "#o1"},
}


def test_round_trip_extensions_primitive_extensions_decimals_narrative():
    assert xml_to_json(json_to_xml(PATIENT)) == PATIENT
    back = xml_to_json(json_to_xml(PATIENT))
    assert str(back["extension"][0]["valueDecimal"]) == "72.50"  # precision kept, not a float
    assert back["text"]["div"] == PATIENT["text"]["div"]


def test_xml_follows_r4_rules():
    root = ET.fromstring(json_to_xml(PATIENT))
    assert root.tag == FHIR + "Patient"
    names = [child.tag.removeprefix(FHIR) for child in root]
    # StructureDefinition order, not JSON order: contained before extension, text before both
    assert names[:4] == ["id", "text", "contained", "extension"]
    assert root.find(FHIR + "extension").get("url") == "http://example.org/ext"
    assert root.find(f"{FHIR}extension/{FHIR}valueDecimal").get("value") == "72.50"
    given = root.findall(f"{FHIR}name/{FHIR}given")
    assert [g.get("value") for g in given] == ["Peter", "James"] and given[1].find(FHIR + "extension") is not None
    assert root.find(FHIR + "name").get("id") == "n1"  # Element.id is an attribute
    assert root.find(FHIR + "birthDate").get("id") == "bd"
    assert root.find(f"{FHIR}contained/{FHIR}Organization/{FHIR}name").get("value") == "Org"
    assert root.find(f"{FHIR}text/{{http://www.w3.org/1999/xhtml}}div/{{http://www.w3.org/1999/xhtml}}p") is not None


def test_decimal_text_kept_exactly_and_types_restored():
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
           "valueQuantity": {"value": Decimal("1.000"), "unit": "kg"},
           "component": [{"code": {"text": "c"}, "valueInteger": 7}, {"code": {"text": "e"},
                                                                     "valueQuantity": {"value": Decimal("1E+3")}}]}
    text = json_to_xml(obs)
    assert b'<value value="1.000"/>' in text and b'value value="1E+3"' in text
    back = xml_to_json(text)
    assert back == obs and type(back["component"][0]["valueInteger"]) is int
    assert fhir_json.dumps(back["valueQuantity"]) == b'{"value":1.000,"unit":"kg"}'


def test_primitive_with_only_an_extension():
    patient = {"resourceType": "Patient", "_gender": {"extension": [{"url": "http://x", "valueString": "?"}]},
               "name": [{"_given": [{"extension": [{"url": "http://y", "valueString": "z"}]}]}]}
    text = json_to_xml(patient)
    assert b"<gender><extension" in text
    assert xml_to_json(text) == patient


def test_text_with_newlines_quotes_and_markup_round_trips():
    patient = {"resourceType": "Patient", "name": [{"text": 'line 1\nline 2\t"quoted" <b>&amp; \r done'}]}
    assert xml_to_json(json_to_xml(patient)) == patient


@pytest.mark.parametrize("resource, message", [
    ({"resourceType": "Patient", "text": {"status": "generated",
                                          "div": '<div xmlns="http://www.w3.org/1999/xhtml">a&nbsp;b</div>'}},
     "not well-formed"),
    ({"resourceType": "Patient", "name": {"family": "x"}}, "'name' must be a JSON array"),
    ({"resourceType": "Patient", "name": ["x"]}, "'name' must be a JSON object"),
    ({"resourceType": "Patient", "gender": {"a": 1}}, "'gender' must be a primitive"),
    ({"resourceType": "Patient", "contained": [5]}, "resource type"),
    ({"resourceType": "Patient", "foo": 1}, "Unknown element 'foo'"),
])
def test_json_that_is_not_r4_is_refused(resource, message):
    with pytest.raises(FhirXmlError, match=message):
        json_to_xml(resource)


def test_narrative_without_namespace_gets_one():
    patient = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div><p>hi</p></div>"}}
    back = xml_to_json(json_to_xml(patient))
    assert back["text"]["div"] == '<div xmlns="http://www.w3.org/1999/xhtml"><p>hi</p></div>'


@pytest.mark.parametrize("data, message", [
    (b"<Patient>", "Malformed"),
    (b'<Patient xmlns="http://hl7.org/fhir"><foo value="1"/></Patient>', "Unknown element 'foo'"),
    (b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>', "true or false"),
    (b'<Patient xmlns="http://example.org"/>', "namespace"),
    (b'<Nope xmlns="http://hl7.org/fhir"/>', "resource type"),
    (b'<!DOCTYPE x [<!ENTITY a "b">]><Patient xmlns="http://hl7.org/fhir"/>', "DOCTYPE"),
    (b'<Observation xmlns="http://hl7.org/fhir"><valueQuantity><value value="1,5"/></valueQuantity></Observation>',
     "decimal"),
])
def test_bad_xml_is_refused(data, message):
    with pytest.raises(FhirXmlError, match=message):
        xml_to_json(data)


# Four files that hold, between them, all 24 resource types of the Synthea data (found once by a greedy cover).
SYNTHEA_COVER = ("0-hospitalInformation", "0-practitionerInformation", "057aa36e-b892", "7278ffc8-5b59")
SYNTHEA_TYPES = {
    "AllergyIntolerance", "CarePlan", "CareTeam", "Claim", "Condition", "Device", "DiagnosticReport",
    "DocumentReference", "Encounter", "ExplanationOfBenefit", "ImagingStudy", "Immunization", "Location",
    "Medication", "MedicationAdministration", "MedicationRequest", "Observation", "Organization", "Patient",
    "Practitioner", "PractitionerRole", "Procedure", "Provenance", "SupplyDelivery"}


def test_every_synthea_resource_type_round_trips():
    """Up to five resources of each type (the first ones met), json -> xml -> json equal."""
    seen: dict[str, int] = {}
    for prefix in SYNTHEA_COVER:
        path = next(SYNTHEA.glob(f"{prefix}*.json.bz2"))
        for entry in fhir_json.loads(bz2.decompress(path.read_bytes()))["entry"]:
            resource = entry["resource"]
            kind = resource["resourceType"]
            if seen.get(kind, 0) < 5:
                seen[kind] = seen.get(kind, 0) + 1
                assert xml_to_json(json_to_xml(resource)) == resource, f"{path.name}: {kind}/{resource['id']}"
    assert set(seen) == SYNTHEA_TYPES


def test_r4_core_package_round_trips():
    """Conformance resources are the hardest case: deep extensions, `_short`-style primitive extensions, XHTML."""
    seen: dict[str, int] = {}
    with tarfile.open(SHARED / "spec" / "r4" / "hl7.fhir.r4.core-4.0.1.tgz") as package:
        for member in package.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            kind = name.split("-", 1)[0]
            if not name.endswith(".json") or "-" not in name or seen.get(kind, 0) >= 40:
                continue
            resource = fhir_json.loads(package.extractfile(member).read())
            seen[kind] = seen.get(kind, 0) + 1
            assert xml_to_json(json_to_xml(resource)) == resource, name
    assert {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "OperationDefinition"} <= set(seen)


async def test_xml_write_and_read_over_http(client):
    body = (b'<Patient xmlns="http://hl7.org/fhir"><name><family value="Xml"/></name>'
            b'<birthDate value="2001-02-03"/></Patient>')
    created = await client.post("/Patient", content=body, headers=XML)
    assert created.status_code == 201 and created.headers["content-type"].startswith("application/fhir+xml")
    resource = xml_to_json(created.content)
    assert resource["name"] == [{"family": "Xml"}]
    as_json = await client.get(f"/Patient/{resource['id']}")
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    assert as_json.json()["birthDate"] == "2001-02-03"
    by_format = await client.get(f"/Patient/{resource['id']}", params={"_format": "xml"})
    assert xml_to_json(by_format.content) == as_json.json()
    search = await client.get("/Patient", params={"_format": "application/fhir+xml"})
    bundle = xml_to_json(search.content)
    assert bundle["resourceType"] == "Bundle" and bundle["entry"][0]["resource"]["id"] == resource["id"]


async def test_xml_errors_and_metadata(client):
    missing = await client.get("/Patient/nope", headers={"Accept": "application/fhir+xml"})
    assert missing.status_code == 404 and xml_to_json(missing.content)["resourceType"] == "OperationOutcome"
    bad = await client.post("/Patient", content=b"<Patient>", headers=XML)
    assert bad.status_code == 400 and b"Malformed" in bad.content
    assert (await client.get("/metadata", headers={"Accept": "text/plain"})).status_code == 406
    health = await client.get("/healthz", headers={"Accept": "application/fhir+xml"})
    assert health.status_code == 200 and health.json() == {"status": "ok"}  # not a resource: stays JSON
    statement = xml_to_json((await client.get("/metadata", params={"_format": "xml"})).content)
    assert "application/fhir+xml" in statement["format"]
    # the first type Hearth can produce wins
    both = await client.get("/metadata", headers={"Accept": "application/fhir+xml, application/fhir+json"})
    assert both.headers["content-type"].startswith("application/fhir+xml")
    weighed = await client.get("/metadata", headers={"Accept": "application/fhir+xml;q=0.5, application/json"})
    assert weighed.headers["content-type"].startswith("application/fhir+json")
    refused = await client.get("/metadata", headers={"Accept": "application/fhir+json;q=0, application/xml"})
    assert refused.headers["content-type"].startswith("application/fhir+xml")


@pytest.mark.parametrize("backend", ["sqlite"])  # mongomock has no transactions (501); XML is backend-neutral
async def test_fhirpath_patch_and_transaction_in_xml(client):
    created = (await client.post("/Patient", json={"resourceType": "Patient", "active": True},
                                 headers={"Content-Type": "application/fhir+json"})).json()
    patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.active"},
        {"name": "value", "valueBoolean": False}]}]}
    patched = await client.patch(f"/Patient/{created['id']}", content=json_to_xml(patch), headers=XML)
    assert patched.status_code == 200 and xml_to_json(patched.content)["active"] is False
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:9b6c7a2e-0000-4000-8000-000000000001", "request": {"method": "POST", "url": "Patient"},
         "resource": {"resourceType": "Patient", "name": [{"family": "InXml"}]}},
        {"request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                      "subject": {"reference": "urn:uuid:9b6c7a2e-0000-4000-8000-000000000001"},
                      "valueQuantity": {"value": Decimal("98.60")}}}]}
    response = await client.post("", content=json_to_xml(bundle), headers=XML)
    assert response.status_code == 200
    result = xml_to_json(response.content)
    assert result["type"] == "transaction-response"
    observation = result["entry"][1]["resource"]
    assert observation["subject"]["reference"] == f"Patient/{result['entry'][0]['resource']['id']}"
    assert str(observation["valueQuantity"]["value"]) == "98.60"
