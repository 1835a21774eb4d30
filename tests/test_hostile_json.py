"""Hostile JSON bodies (issue 12): each is refused with a 4xx OperationOutcome, or accepted exactly where it is valid
FHIR JSON, and never answered with a 500, whichever way it comes in: POST, PUT, PATCH (JSON Patch and FHIRPath
Patch), a batch or transaction entry, and a batch entry's request.url. A refusal writes nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx
import pytest

from hearth.capability import fhir_json
from conftest import FHIR_JSON

# Each document has slots a case fills: @S@ a JSON string (Patient.name[0].family), @I@ a number in an integer
# element (Patient.multipleBirthInteger), @D@ a number in a decimal element (an extension's valueDecimal), @U@ the
# inside of a string in a batch entry's request.url; @DUP@ marks the property a case may repeat.
RESOURCE = (b'{"resourceType":"Patient","id":"p1","name":[{@DUP@"family":@S@}],"multipleBirthInteger":@I@,'
            b'"extension":[{"url":"http://example.org/d","valueDecimal":@D@}]}')
JSON_PATCH = (b'[{"op":"replace","path":"/name/0/family",@DUP@"value":@S@},'
              b'{"op":"replace","path":"/multipleBirthInteger","value":@I@},'
              b'{"op":"replace","path":"/extension/0/valueDecimal","value":@D@}]')
FHIRPATH_PATCH = (b'{"resourceType":"Parameters","parameter":['
                  b'{"name":"operation","part":[{"name":"type","valueCode":"replace"},'
                  b'{"name":"path","valueString":"Patient.name[0].family"},{@DUP@"name":"value","valueString":@S@}]},'
                  b'{"name":"operation","part":[{"name":"type","valueCode":"replace"},'
                  b'{"name":"path","valueString":"Patient.multipleBirth"},{"name":"value","valueInteger":@I@}]},'
                  b'{"name":"operation","part":[{"name":"type","valueCode":"replace"},'
                  b'{"name":"path","valueString":"Patient.extension[0].value"},{"name":"value","valueDecimal":@D@}]}]}')
BUNDLE = b'{"resourceType":"Bundle","type":"@TYPE@","entry":[{"resource":' + RESOURCE.replace(b"@DUP@", b"") + \
         b',"request":{@DUP@"method":"PUT","url":"Patient/p1"}}]}'
SEARCH_BATCH = b'{"resourceType":"Bundle","type":"batch","entry":[{"request":{@DUP@"method":"GET","url":"Patient?family=@U@"}}]}'

PATHS = ("POST", "PUT", "JSON Patch", "FHIRPath Patch", "batch", "transaction", "batch request.url")


@dataclass(frozen=True)
class Case:
    """What a case puts in the slots, and what it is: `syntax` (not FHIR JSON: 400 wherever it is), `invalid` (well
    formed, but out of range for its element) or `valid` (stored exactly)."""

    kind: str
    s: bytes = b'"Doe"'
    i: bytes = b"2"
    d: bytes = b"1.5"
    dup: bool = False
    family: str | None = None  # valid strings: the family name as stored

    def fill(self, template: bytes) -> bytes:
        repeated = rb"\1@S@,\1" if self.dup else rb"\1"  # a repeated property holds the case's string
        filled = re.sub(rb'@DUP@("[a-z]+":)', repeated, template)
        return (filled.replace(b"@S@", self.s).replace(b"@I@", self.i).replace(b"@D@", self.d)
                .replace(b"@U@", self.s[1:-1]))

    @property
    def in_string(self) -> bool:
        return self.s != Case.s or self.dup


# Grouped by rule: each group holds the inputs the rule refuses and the nearest ones it must still accept.
GROUPS = {
    "surrogates": {
        "lone high surrogate": Case("syntax", s=rb'"a\ud800b"'),
        "lone low surrogate": Case("syntax", s=rb'"\udc00"'),
        "high surrogate then a letter": Case("syntax", s=rb'"\ud83d\u0041"'),
        "raw surrogate (UTF-8 bytes)": Case("syntax", s=b'"\xed\xa0\x80"'),
        "surrogate pair": Case("valid", s=rb'"\ud83d\ude00"', family="\U0001F600"),
    },
    "control characters": {
        "escaped NUL": Case("syntax", s=rb'"a\u0000b"'),
        "escaped U+001F": Case("syntax", s=rb'"\u001F"'),
        "backspace escape": Case("syntax", s=rb'"a\bb"'),
        "form feed escape": Case("syntax", s=rb'"a\fb"'),
        "NUL after an escaped backslash": Case("syntax", s=rb'"\\\u0000"'),
        "raw control character": Case("syntax", s=b'"a\x01b"'),
        "tab, LF and CR escapes": Case("valid", s=rb'"a\tb\nc\rd"', family="a\tb\nc\rd"),
        "escaped backslash then u0000": Case("valid", s=rb'"\\u0000"', family="\\u0000"),
        "DEL": Case("valid", s=rb'"a\u007fb"', family="a\x7fb"),
    },
    "duplicate property names": {
        "a property twice in one object": Case("syntax", dup=True),
        "twice, and a colon written as an escape": Case("syntax", s=rb'"a\u003ab"', dup=True),
        "twice, holding colons": Case("syntax", s=b'"a:b::c"', dup=True),
        "a colon written as an escape": Case("valid", s=rb'"a\u003ab"', family="a:b"),
        "colons in a string": Case("valid", s=b'"a:b::c"', family="a:b::c"),
    },
    "integers out of range": {
        "integer of 5000 digits": Case("invalid", i=b"7" * 5000),
        "integer past 64 bits": Case("invalid", i=b"18446744073709551616"),
        "negative integer past 64 bits": Case("invalid", i=b"-99999999999999999999999999999"),
    },
    "decimals past 64 bits": {
        "decimal past 64 bits": Case("valid", d=b"123456789012345678901234567890"),
        "decimal of 5000 digits": Case("valid", d=b"9" * 5000),
        "decimal past 64 bits with a fraction": Case("valid", d=b"-18446744073709551616.50"),
    },
}

# The status each kind of case gets on each path; for batch, the entry's status in a 200 batch-response.
EXPECTED = {
    "syntax": dict.fromkeys(PATHS, 400),
    "invalid": {"POST": 400, "PUT": 400, "JSON Patch": 422, "FHIRPath Patch": 422, "batch": (200, "400"),
                "transaction": 400},
    "valid": {"POST": 201, "PUT": 200, "JSON Patch": 200, "FHIRPath Patch": 200, "batch": (200, "200"),
              "transaction": (200, "200"), "batch request.url": (200, "200")},
}


async def send(client: httpx.AsyncClient, path: str, case: Case) -> httpx.Response:
    if path == "POST":
        return await client.post("/Patient", content=case.fill(RESOURCE), headers=FHIR_JSON)
    if path == "PUT":
        return await client.put("/Patient/p1", content=case.fill(RESOURCE), headers=FHIR_JSON)
    if path == "JSON Patch":
        return await client.patch("/Patient/p1", content=case.fill(JSON_PATCH),
                                  headers={"Content-Type": "application/json-patch+json"})
    if path == "FHIRPath Patch":
        return await client.patch("/Patient/p1", content=case.fill(FHIRPATH_PATCH), headers=FHIR_JSON)
    if path in ("batch", "transaction"):
        return await client.post("/", content=case.fill(BUNDLE.replace(b"@TYPE@", path.encode())), headers=FHIR_JSON)
    return await client.post("/", content=case.fill(SEARCH_BATCH), headers=FHIR_JSON)


async def versions(client: httpx.AsyncClient) -> int:
    return fhir_json.loads((await client.get("/_history")).content)["total"]


@pytest.mark.parametrize("group", GROUPS)
async def test_hostile_body(client, group):
    created = await client.put("/Patient/p1", content=Case("valid").fill(RESOURCE), headers=FHIR_JSON)
    assert created.status_code == 201, created.text
    for name, case in GROUPS[group].items():
        for path in PATHS:
            if path != "batch request.url" or case.in_string:
                await check(client, f"{name} by {path}", path, case)
    if group == "control characters":  # refused in bodies, but what quotes one (an outcome, a Bundle) is served
        for url in ("/Patient/a%01b", "/Patient?fam%01ily=x"):
            for query in ("_format=xml", "_pretty=true"):
                response = await client.get(f"{url}{'&' if '?' in url else '?'}{query}")
                assert response.status_code == (200 if "?" in url else 404), f"{url} {query}: {response.text[:300]}"


async def check(client: httpx.AsyncClient, what: str, path: str, case: Case) -> None:
    before = await versions(client)
    response = await send(client, path, case)
    expected = EXPECTED[case.kind][path]
    status, entry_status = expected if isinstance(expected, tuple) else (expected, None)
    assert response.status_code == status, f"{what}: {response.text[:300]}"
    body = fhir_json.loads(response.content)  # Python's json cannot read integers of 5000 digits
    if entry_status is not None:
        assert body["entry"][0]["response"]["status"].startswith(entry_status), f"{what}: {response.text[:300]}"
    elif body["resourceType"] == "OperationOutcome":
        assert body["issue"][0]["diagnostics"], what
    if case.kind == "syntax":
        assert body["issue"][0]["code"] == "structure", f"{what}: {response.text[:300]}"
    wrote = case.kind == "valid" and path != "batch request.url"
    assert await versions(client) == before + wrote, what
    if wrote:
        await check_stored(client, response, case)


async def check_stored(client: httpx.AsyncClient, response: httpx.Response, case: Case) -> None:
    """The written resource, as served, holds the case's values exactly (numbers digit for digit)."""
    location = response.headers.get("location") or fhir_json.loads(response.content)["entry"][0]["response"]["location"]
    served = await client.get(location.split("/_history")[0].removeprefix(str(client.base_url)))
    assert served.status_code == 200, served.text
    assert b'"valueDecimal":' + case.d + b"}" in served.content
    assert fhir_json.loads(served.content)["name"][0]["family"] == (case.family or "Doe")
