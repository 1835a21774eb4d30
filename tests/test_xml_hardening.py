"""Hostile FHIR XML bodies: every DTD is refused wherever it stands and in any encoding, nesting is bounded; each
is a 400 `structure` OperationOutcome through POST, PUT and a batch Bundle, and nothing is stored."""

from __future__ import annotations

import pytest

from hearth.capability.fhir_xml import MAX_DEPTH
from hearth.capability.validation import MAX_DEPTH as RESOURCE_DEPTH

XML_BODY = {"Content-Type": "application/fhir+xml"}  # answers stay JSON: no Accept
COMMENT = "<!--" + "x" * 3000 + "-->\n"  # pushes what follows past any fixed-size look at the head
LAUGHS = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))

# name -> (XML prolog, what stands in family/@value, encoding of the whole document)
DTD_ATTACKS = {
    "internal entity after a 3 KB comment": (COMMENT + '<!DOCTYPE Patient [<!ENTITY e "INJECTED">]>', "&e;",
                                             "utf-8"),
    "UTF-16 with a BOM": ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE Patient [<!ENTITY e "INJECTED">]>',
                          "&e;", "utf-16"),
    "UTF-16LE declared, no BOM": ('<?xml version="1.0" encoding="UTF-16"?>'
                                  '<!DOCTYPE Patient [<!ENTITY e "INJECTED">]>', "&e;", "utf-16-le"),
    "ISO-8859-1 declared": ('<?xml version="1.0" encoding="ISO-8859-1"?>' + COMMENT
                            + '<!DOCTYPE Patient [<!ENTITY e "INJECTED">]>', "&e;", "latin-1"),
    "billion laughs": (COMMENT + f'<!DOCTYPE Patient [<!ENTITY l0 "lol">{LAUGHS}]>', "&l9;", "utf-8"),
    "external entity": (COMMENT + '<!DOCTYPE Patient [<!ENTITY e SYSTEM "file:///etc/hostname">]>', "&e;",
                        "utf-8"),
    "external DTD": (COMMENT + '<!DOCTYPE Patient SYSTEM "http://127.0.0.1:9/evil.dtd">', "Plain", "utf-8"),
    "parameter entity": (COMMENT + '<!DOCTYPE Patient [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
                         "Plain", "utf-8"),
}


def patient(family: str, inner: str = "") -> str:
    return (f'<Patient xmlns="http://hl7.org/fhir"><id value="x"/>{inner}<name><family value="{family}"/></name>'
            "</Patient>")


def batch(resource: str) -> str:
    return ('<Bundle xmlns="http://hl7.org/fhir"><type value="batch"/><entry><resource>' + resource
            + '</resource><request><method value="POST"/><url value="Patient"/></request></entry></Bundle>')


def nested(depth: int) -> str:
    """Extensions nested so that the document is `depth` elements deep (Patient, extension..., valueString)."""
    levels = depth - 2
    return '<extension url="u">' * levels + '<valueString value="v"/>' + "</extension>" * levels


async def send(client, path: str, body: bytes):
    if path == "POST":
        return await client.post("/Patient", content=body, headers=XML_BODY)
    if path == "PUT":
        return await client.put("/Patient/x", content=body, headers=XML_BODY)
    return await client.post("", content=body, headers=XML_BODY)


def document(path: str, resource: str) -> str:
    return batch(resource) if path == "batch" else resource


async def assert_refused(response, fragment: str) -> None:
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["code"] == "structure" and fragment in issue["diagnostics"], issue


async def nothing_stored(client) -> None:
    history = (await client.get("/_history")).json()
    assert history["total"] == 0, history


@pytest.mark.parametrize("path", ["POST", "PUT", "batch"])
@pytest.mark.parametrize("attack", DTD_ATTACKS, ids=list(DTD_ATTACKS))
async def test_any_dtd_is_refused(client, attack, path):
    prolog, family, encoding = DTD_ATTACKS[attack]
    body = (prolog + document(path, patient(family))).encode(encoding)
    await assert_refused(await send(client, path, body), "DOCTYPE")
    await nothing_stored(client)


@pytest.mark.parametrize("path", ["POST", "PUT", "batch"])
async def test_nesting_is_bounded(client, path):
    deepest = RESOURCE_DEPTH + 1  # the deepest resource validation allows, its primitives one element lower
    accepted = await send(client, path, document(path, patient("Deep", nested(deepest))).encode())
    assert accepted.status_code in (200, 201), accepted.text
    past_validation = await send(client, path, document(path, patient("Deeper", nested(deepest + 1))).encode())
    assert "nest more than" in past_validation.text and past_validation.status_code in (200, 400)  # batch: 200
    for depth in (MAX_DEPTH + 1, 30_000):  # 30,000: as deep as the test app's 1 MiB body limit allows
        body = document(path, patient("Deeper", nested(depth))).encode()
        await assert_refused(await send(client, path, body), f"nested deeper than {MAX_DEPTH} elements")
    families = [entry["resource"]["name"][0]["family"]
                for entry in (await client.get("/_history")).json().get("entry", [])]
    assert families == ["Deep"]


async def test_declared_encodings_are_read_or_refused(client):
    """What expat reads (UTF-16, ISO-8859-1) is read; multi-byte encodings it cannot and unknown names: a 400."""
    name = "Ærøskøbing"
    for encoding, declared in (("utf-16", "UTF-16"), ("latin-1", "ISO-8859-1")):
        body = f'<?xml version="1.0" encoding="{declared}"?>{patient(name)}'.encode(encoding)
        response = await send(client, "PUT", body)
        assert response.status_code in (200, 201), response.text
        assert response.json()["name"][0]["family"] == name
    for declared in ("Shift_JIS", "no-such-encoding"):
        body = f'<?xml version="1.0" encoding="{declared}"?><Patient xmlns="http://hl7.org/fhir"/>'.encode()
        await assert_refused(await send(client, "POST", body), "Malformed XML")
    assert (await client.get("/_history")).json()["total"] == 2  # the two PUTs
