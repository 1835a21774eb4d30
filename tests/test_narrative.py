"""R4 narrative rules on the way in (well-formed XHTML in the XHTML namespace, txt-1, txt-2, no active content) on
every write path, and XML reads of a narrative stored before the rules were checked."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from hearth.capability.fhir_xml import json_to_xml, xml_to_json
from hearth.capability.narrative import MAX_DEPTH
from hearth.capability.narrative import check_narrative
from conftest import FHIR_JSON
from hearth.storage.base import Write

X = 'xmlns="http://www.w3.org/1999/xhtml"'
XML = {"Content-Type": "application/fhir+xml"}

# name -> (refused div, what the refusal says, an allowed twin that differs only where the rule bites)
NARRATIVES = {
    "unbalanced tags": (f"<div {X}><b>Jane</div>", "not well-formed", f"<div {X}><b>Jane</b></div>"),
    "undeclared entity": (f"<div {X}>Jane&nbsp;Doe</div>", "undefined entity", f"<div {X}>Jane&#160;Doe</div>"),
    "no XHTML namespace": ("<div>Jane</div>", "XHTML namespace", f"<div {X}>Jane</div>"),
    "script": (f"<div {X}>Jane<script>alert(1)</script></div>", "<script> is not allowed",
               f"<div {X}>Jane<code>alert(1)</code></div>"),
    "style element": (f"<div {X}><style>p {{color: red}}</style><p>Jane</p></div>", "<style> is not allowed",
                      f'<div {X}><p style="color: red">Jane</p></div>'),
    "iframe": (f'<div {X}>Jane<iframe src="https://evil.example"/></div>', "<iframe> is not allowed",
               f'<div {X}>Jane<a href="https://evil.example">link</a></div>'),
    "form": (f'<div {X}><form action="https://evil.example"><input name="pw"/></form>Jane</div>',
             "<form> is not allowed", f'<div {X}><table><tr><td>Jane</td></tr></table></div>'),
    "element in another namespace": (f'<div {X}>Jane<svg xmlns="http://www.w3.org/2000/svg"/></div>',
                                     "<svg> in namespace http://www.w3.org/2000/svg", f"<div {X}>Jane<br/></div>"),
    "event handler": (f'<div {X}><img src="x.png" onerror="alert(1)"/></div>', "attribute onerror on <img>",
                      f'<div {X}><img src="x.png" alt="x"/></div>'),
    "onclick": (f'<div {X} onclick="alert(1)">Jane</div>', "attribute onclick on <div>",
                f'<div {X} title="alert(1)" xml:lang="en">Jane</div>'),
    "xlink attribute": (f'<div {X}><a xmlns:xl="http://www.w3.org/1999/xlink" xl:href="https://e.org">Jane</a>'
                        "</div>", "xlink", f'<div {X}><a href="https://e.org">Jane</a></div>'),
    "javascript: link": (f'<div {X}><a href="javascript:alert(1)">Jane</a></div>', "javascript: URL in href",
                         f'<div {X}><a href="https://e.org/javascript:alert(1)">Jane</a></div>'),
    "javascript: split by a tab": (f'<div {X}><a href=" Java&#9;Script:alert(1)">Jane</a></div>',
                                   "javascript: URL in href", f'<div {X}><a href="#jane">Jane</a></div>'),
    "vbscript: image": (f'<div {X}><img src="vbscript:msgbox(1)"/>Jane</div>', "vbscript: URL in src",
                        f'<div {X}><img src="https://e.org/jane.png"/>Jane</div>'),
    "data: link": (f'<div {X}><a href="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;">Jane</a></div>',
                   "data: URL in href", f'<div {X}><img src="data:image/png;base64,iVBORw0KGgo="/>Jane</div>'),
    "no content (txt-2)": (f"<div {X}> <p> </p> <br/> </div>", "txt-2", f'<div {X}> <p><img src="#photo"/></p> </div>'),
    "nested too deep": (f"<div {X}>{'<span>' * MAX_DEPTH}Jane{'</span>' * MAX_DEPTH}</div>",
                        f"nested deeper than {MAX_DEPTH}",
                        f"<div {X}>{'<span>' * (MAX_DEPTH - 1)}Jane{'</span>' * (MAX_DEPTH - 1)}</div>"),
}


def patient(div: str, **extra) -> dict:
    return {"resourceType": "Patient", "text": {"status": "generated", "div": div}, **extra}


def refusal(response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    return response.json()["issue"][0]


async def stored(client) -> int:
    return (await client.get("/_history")).json()["total"]


@pytest.mark.parametrize("name", NARRATIVES)
async def test_narrative_rules(client, name):
    refused, says, allowed = NARRATIVES[name]
    issue = refusal(await client.post("/Patient", json=patient(refused), headers=FHIR_JSON))
    assert issue["expression"] == ["Patient.text.div"] and says in issue["diagnostics"], issue
    assert issue["code"] in ("value", "invalid")
    assert await stored(client) == 0
    created = await client.post("/Patient", json=patient(allowed), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    assert created.json()["text"]["div"] == allowed  # stored as sent


async def test_every_write_path_checks_narratives(client):
    script = f"<div {X}>Jane<script>alert(1)</script></div>"
    issue = refusal(await client.put("/Patient/p1", json=patient(script, id="p1"), headers=FHIR_JSON))
    assert issue["expression"] == ["Patient.text.div"]
    issue = refusal(await client.post("/Patient", content=json_to_xml(patient(script)), headers=XML))
    assert "Patient.text.div" in issue["diagnostics"] and "<script>" in issue["diagnostics"]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                   "contained": [patient(script, id="c")], "subject": {"reference": "#c"}}
    issue = refusal(await client.post("/Observation", json=observation, headers=FHIR_JSON))
    assert issue["expression"] == ["Observation.contained[0].text.div"]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(script), "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("", json=batch, headers=FHIR_JSON)
    assert response.status_code == 200 and response.json()["entry"][0]["response"]["status"].startswith("400")
    assert await stored(client) == 0
    created = await client.put("/Patient/p1", json={"resourceType": "Patient", "id": "p1"}, headers=FHIR_JSON)
    assert created.status_code == 201
    patch = [{"op": "add", "path": "/text", "value": {"status": "generated", "div": script}}]
    response = await client.patch("/Patient/p1", content=orjson.dumps(patch),
                                  headers={"Content-Type": "application/json-patch+json"})
    assert response.status_code in (400, 422) and "<script>" in response.text, response.text
    assert await stored(client) == 1  # only the plain PUT


@pytest.mark.parametrize("backend", ["sqlite"])  # mongomock has no transactions (501)
async def test_transaction_with_a_bad_narrative_writes_nothing(client):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(f"<div {X}>fine</div>"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(f'<div {X}><a href="javascript:alert(1)">x</a></div>'),
         "request": {"method": "POST", "url": "Patient"}}]}
    response = await client.post("", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 400 and "Bundle.entry[1]" in response.text, response.text
    assert await stored(client) == 0


# id -> (a narrative stored before narratives were checked, what its escaped form shows of it)
LEGACY = {
    "broken": (f"<div {X}><b>Jane</div>", "&lt;b&gt;Jane&lt;/div&gt;"),
    "laughs": ('<!DOCTYPE div [<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {"b" * i}a "{("&" + "b" * (i - 1) + "a;") * 10}">' for i in range(1, 8))
        + f"]><div {X}>&bbbbbbba;</div>", "&amp;bbbbbbba;"),
    "control-character": (f"<div {X}>Jane\u0001Doe</div>", "Jane\ufffdDoe"),
}


async def plant(app, resource_id: str, div: str) -> None:
    """Write a version straight into the store, as a release without the narrative check could have."""
    body = orjson.dumps({"resourceType": "Patient", "id": resource_id,
                         "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00.000000Z"},
                         "text": {"status": "generated", "div": div}})
    await app.ctx.store.commit([Write("Patient", resource_id, 1, datetime(2024, 1, 1, tzinfo=timezone.utc), body,
                                      (), 0, "create")])


async def test_xml_read_of_a_stored_broken_narrative_serves_it_escaped(app, client):
    for resource_id, (div, _) in LEGACY.items():
        await plant(app, resource_id, div)
    for resource_id, (div, shown) in LEGACY.items():
        response = await client.get(f"/Patient/{resource_id}", params={"_format": "xml"})
        assert response.status_code == 200, response.text
        served = xml_to_json(response.content)["text"]["div"]
        assert served.startswith(f"<div {X}><pre>") and shown in served
        assert check_narrative(served) is None  # what is served is a valid narrative, inert
        as_json = await client.get(f"/Patient/{resource_id}")
        assert as_json.json()["text"]["div"] == div  # the JSON read still serves the stored bytes
    search = await client.get("/Patient", params={"_format": "xml"})
    assert search.status_code == 200 and len(xml_to_json(search.content)["entry"]) == len(LEGACY)
