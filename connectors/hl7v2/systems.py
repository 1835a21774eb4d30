"""Hand-written naming rules (design note a1, defects 7 and 17): v2 coding-system names (HL7 table 0396) as FHIR
code system URIs, and an HD (assigning authority) as an Identifier.system."""

from __future__ import annotations

import re
from typing import Mapping

# HL7 table 0396 names the samples and common feeds use. Local names (99zzz, L, LOCAL) have no system.
CODING_SYSTEMS: Mapping[str, str] = {
    "LN": "http://loinc.org", "LOINC": "http://loinc.org",
    "SCT": "http://snomed.info/sct", "SNM": "http://snomed.info/sct", "SNOMED": "http://snomed.info/sct",
    "SNOMEDCT": "http://snomed.info/sct", "SNM3": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "CVX": "http://hl7.org/fhir/sid/cvx", "MVX": "http://hl7.org/fhir/sid/mvx",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "I10": "http://hl7.org/fhir/sid/icd-10-cm", "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm", "I9CM": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "NCIT": "http://ncimeta.nci.nih.gov",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CPT": "http://www.ama-assn.org/go/cpt", "C4": "http://www.ama-assn.org/go/cpt",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    # the PHIN VADS value set OID (CDC Public Health Information Network vocabulary)
    "CDCPHINVS": "urn:oid:2.16.840.1.114222.4.5.274",
    "ISO3166_1": "urn:iso:std:iso:3166", "ISO+": "urn:iso:std:iso:11073:10101",
    "HL7": "http://terminology.hl7.org/CodeSystem/v2-0000",
}
_HL7_TABLE = re.compile(r"HL7(\d{4})")
_LOCAL = re.compile(r"99[A-Z0-9]{3}|L|LOCAL")
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def coding_system(name: str) -> str | None:
    """The code system URI of a v2 coding-system name; None for a local or unknown one (the code stays, without
    system). A value that already is a URI is kept."""
    name = name.strip()
    if not name or _LOCAL.fullmatch(name.upper()):
        return None
    if _URI.fullmatch(name):
        return name
    upper = name.upper()
    table = _HL7_TABLE.fullmatch(upper)
    if table:
        return f"http://terminology.hl7.org/CodeSystem/v2-{table.group(1)}"
    return CODING_SYSTEMS.get(upper)


def table_system(table: str | None) -> str | None:
    """The code system of a v2 table named like 'HL70112' (used when a CWE carries no coding system)."""
    match = _HL7_TABLE.fullmatch((table or "").upper())
    return f"http://terminology.hl7.org/CodeSystem/v2-{match.group(1)}" if match else None


def identifier_system(namespace: str, universal_id: str, id_type: str, configured: Mapping[str, str]) -> str | None:
    """Identifier.system of an HD (HD.1 namespace, HD.2 universal id, HD.3 its type): the configured map first
    (by HD.1, else HD.2), then ISO -> urn:oid:, UUID -> urn:uuid:, an absolute URI as is, else HD.1 as written."""
    for key in (namespace, universal_id):
        if key and key in configured:
            return configured[key]
    kind = id_type.strip().upper()
    if universal_id and kind == "ISO":
        return f"urn:oid:{universal_id}"
    if universal_id and kind == "UUID":
        return f"urn:uuid:{universal_id.lower()}"
    if universal_id and kind in ("URI", "URL") and _URI.fullmatch(universal_id):
        return universal_id
    return namespace or (universal_id if _URI.fullmatch(universal_id) else None) or None
