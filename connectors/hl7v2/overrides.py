"""Hand-written, reviewed corrections to the v2-to-FHIR IG's tables, applied by generate.py (each with its reason).

An `Override` names one CSV record (`file` relative to the mappings folder, `row` the 1-based record number) and
the cells it `expect`s there, so that it fails loudly when an IG update changes the row; then it replaces cells
(`set`), drops the row (`drop`), or adds rows after it (`add`: copies of the row with these cells changed).
Columns are positions (see generate.py: M_* for message maps, S_* for segment and data type maps).

Repairs the generator makes on every row (no override needed):
- vocabulary v2 codes are stripped of whitespace, including the NO-BREAK SPACE of '<\\xa0' (InterpretationCodes);
- quoted constants are stripped (' http://hl7.org/fhir/ValueSet/subject-location');
- 'HD-3' inside the HD map means component HD.3; a '(' left open at the end of a condition closes there;
- 'IF A AND B VALUED' applies the predicate to both; a missing AND between two predicates is implied;
- a trailing '.reference' in message references is the reference itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

M_COND, M_TARGET, M_MAP, M_REFS = 6, 9, 10, 11
S_COND, S_NARR, S_TARGET, S_DT, S_VOCAB, S_ASSIGN = 6, 8, 9, 14, 15, 16

MSG = "messages/HL7 Message - FHIR R4_ {} - Sheet1.csv"
SEG = "segments/HL7 Segment - FHIR R4_ {}.csv"
DT = "datatypes/HL7 Data Type - FHIR R4_ {} - Sheet1.csv"


@dataclass(frozen=True)
class Override:
    """One reviewed change to one CSV record."""

    file: str
    row: int
    expect: dict[int, str]
    why: str
    set: dict[int, str] = field(default_factory=dict)
    drop: bool = False
    add: tuple[dict[int, str], ...] = ()


OBX_SN_TEXT = 'OBX-5.1+" "+OBX-5.2+" "+OBX-5.3+" "+OBX-5.4" "OBX-6"'
OBX_SN_TEXT_FIXED = 'OBX-5.1+" "+OBX-5.2+" "+OBX-5.3+" "+OBX-5.4+" "+OBX-6'
OBX = SEG.format("OBX[Observation] - OBX")
OBXC = SEG.format("OBX[Observation-Component] - OBX")
NATURE = '"http://hl7.org/fhir/StructureDefinition/observation-nature-of-abnormal-test"'

OVERRIDES: list[Override] = [
    # -- message maps: links
    Override(MSG.format("ORU_R01"), 49, {M_TARGET: "DiagnosticReport[1]", M_REFS: ""},
             "DiagnosticReport.subject is never set by the IG: link it to the message's Patient",
             set={M_REFS: "DiagnosticReport[1].subject.reference=Patient[1].id"}),
    Override(MSG.format("ORU_R01"), 65, {M_REFS: "ServiceRequest[1].supportingInfo.reference=Observation[1].id; "
                                                  "Observation[1].subject.id=Patient[1].id"},
             "typos: the QST/SCI observation is Observation[2] and its subject is a reference, not an id",
             set={M_REFS: "ServiceRequest[1].supportingInfo.reference=Observation[2].id; "
                          "Observation[2].subject.reference=Patient[1].id"}),
    Override(MSG.format("ORU_R01"), 66, {M_REFS: "ServiceRequest[1].supportingInfo.reference=Observation[1].id; "
                                                  "Observation[1].subject.id=Patient[1].id",
                                         M_COND: 'IF (OBX-5 LST.count GREATER THAN 1 AND OBX-2 IS NOT "NA") AND OBX-29 '
                                                 'AND OBX-29 IN ("QST", "SCI")'},
             "typos as in row 65, and a doubled 'AND OBX-29' in the condition",
             set={M_REFS: "ServiceRequest[1].supportingInfo.reference=Observation[2].id; "
                          "Observation[2].subject.reference=Patient[1].id",
                  M_COND: 'IF (OBX-5 LST.count GREATER THAN 1 AND OBX-2 IS NOT "NA") AND OBX-29 IN ("QST", "SCI")'}),
    Override(MSG.format("VXU_V04"), 40, {M_REFS: "Immunzation.patient.reference=Patient[1].id"},
             "typo 'Immunzation': Immunization.patient is the message's Patient",
             set={M_REFS: "Immunization[1].patient.reference=Patient[1].id"}),
    Override(MSG.format("VXU_V04"), 43, {M_TARGET: 'Immunization[1].performer.function.coding.code="OP\'"'},
             "stray quote in the constant: the performer function code is OP",
             set={M_TARGET: 'Immunization[1].performer.function.coding.code="OP"'}),
    # -- PID[Patient]
    Override(SEG.format("PID[Patient] - PID"), 31, {S_ASSIGN: '"SS"'},
             "PID-19 is the US social security number: pick the 'SS' alternative", set={S_NARR: ""}),
    Override(SEG.format("PID[Patient] - PID"), 32, {S_ASSIGN: '"SB"'},
             "PID-19: the 'SB' (outside the US) alternative is not Hearth's", drop=True),
    Override(SEG.format("PID[Patient] - PID"), 34, {S_ASSIGN: '"http://hl7.org/fhir/sid/us-ssn."'},
             "trailing dot in the US SSN system URI", set={S_ASSIGN: '"http://hl7.org/fhir/sid/us-ssn"'}),
    # -- OBR[Specimen]
    Override(SEG.format("OBR[Specimen] - Sheet1"), 4, {S_TARGET: "accessionIdentifier", S_DT: "CX[Identifier]"},
             "OBR-2 is an EI, not a CX (the CX map makes EI.2, the namespace, a check digit): the EI map OBR-2 "
             "uses for DiagnosticReport and ServiceRequest", set={S_DT: "EI[Identifier-Extension]"}),
    # -- PV1[Encounter]
    Override(SEG.format("PV1[Encounter] - PV1"), 17,
             {S_TARGET: "participant[2].individual(Practitioner)",
              S_ASSIGN: '"http://terminology.hl7.org/CodeSystem/v3-ParticipationType"'},
             "PV1-8 assigns the ParticipationType system URL to the referring doctor's reference: drop the constant",
             set={S_ASSIGN: ""}),
    # -- OBX[Observation] and OBX[Observation-Component]
    Override(OBX, 19, {S_ASSIGN: OBX_SN_TEXT}, "missing '+' before OBX-6 in the SN text", set={S_ASSIGN: OBX_SN_TEXT_FIXED}),
    Override(OBX, 22, {S_ASSIGN: OBX_SN_TEXT}, "missing '+' before OBX-6 in the SN text", set={S_ASSIGN: OBX_SN_TEXT_FIXED}),
    Override(OBX, 24, {S_ASSIGN: OBX_SN_TEXT},
             "'if rows 19-23 all fail' is not a row condition: the engine's SN fallback does it", drop=True),
    Override(OBX, 25, {S_TARGET: "valueSampedData"}, "typo: valueSampledData", set={S_TARGET: "valueSampledData"}),
    Override(OBX, 40, {S_TARGET: "extension[2].uri", S_ASSIGN: NATURE}, "an extension has a url, not a uri",
             set={S_TARGET: "extension[2].url"}),
    Override(OBXC, 20, {S_ASSIGN: OBX_SN_TEXT}, "missing '+' before OBX-6 in the SN text",
             set={S_ASSIGN: OBX_SN_TEXT_FIXED}),
    Override(OBXC, 23, {S_ASSIGN: OBX_SN_TEXT}, "missing '+' before OBX-6 in the SN text",
             set={S_ASSIGN: OBX_SN_TEXT_FIXED}),
    Override(OBXC, 25, {S_ASSIGN: OBX_SN_TEXT},
             "'if rows 20-24 all fail' is not a row condition: the engine's SN fallback does it", drop=True),
    Override(OBXC, 43, {S_TARGET: "extension[2].uri", S_ASSIGN: NATURE}, "an extension has a url, not a uri",
             set={S_TARGET: "extension[2].url"}),
    # -- data types: assigning authorities become Identifier.system, not one Organization per authority
    Override(DT.format("CX[Identifier]"), 8, {S_TARGET: "assigner(Organization)"},
             "CX.4 is the identifier's namespace: Identifier.system (row 9), not an Organization per authority",
             drop=True),
    Override(DT.format("CX[Identifier]"), 9, {S_COND: "IF CX.4 IN http://hl7.org/implement/standards/fhir/"
                                                      "identifier-registry.html", S_TARGET: "system"},
             "CX.4 always gives Identifier.system through HD[uri] (the registry test is not computable)",
             set={S_COND: ""}),
    Override(DT.format("XCN[Practitioner]"), 11, {S_NARR: "If organization"},
             "XCN.9 is the identifier's namespace: Identifier.system (row 12)", drop=True),
    Override(DT.format("XCN[Practitioner]"), 12, {S_NARR: "If system", S_TARGET: "identifier[1].system"},
             "XCN.9 always gives Identifier.system through HD[uri]", set={S_NARR: ""}),
    Override(DT.format("XON[Organization]"), 10, {S_NARR: "If organization"},
             "XON.6 is the identifier's namespace: Identifier.system (row 11)", drop=True),
    Override(DT.format("XON[Organization]"), 11, {S_NARR: "If system", S_TARGET: "identifier[1].system"},
             "XON.6 always gives Identifier.system through HD[uri]", set={S_NARR: ""}),
    Override(DT.format("XAD[Address]"), 13, {S_TARGET: "extension[2].uri"}, "an extension has a url, not a uri",
             set={S_TARGET: "extension[2].url"}),
]

# Routing beyond table 0354 (MessageStructure): which map and tree an event uses when the IG has none of its own.
EVENTS: dict[str, dict] = {
    "ADT^A03": {"tree": "ADT_A01", "map": "ADT_A01",
                "note": "no IG map for ADT_A03: the ADT_A01 map (the IG's README says so for A03)"},
    "ADT^A11": {"tree": "ADT_A11", "map": "ADT_A11", "note": "table 0354 says ADT_A09; the IG maps A11 on its own"},
    "ADT^A40": {"tree": "ADT_A39", "map": None, "handler": "merge",
                "note": "no IG map for ADT_A39: Hearth's merge (surviving Patient gains identifiers, link replaced-by)"},
}

# Trees the IG has no message map for.
STRUCTURES: dict[str, list] = {
    "ADT_A39": [
        {"seg": "MSH", "min": 1, "max": 1}, {"seg": "SFT", "min": 0, "max": -1}, {"seg": "UAC", "min": 0, "max": 1},
        {"seg": "EVN", "min": 1, "max": 1},
        {"group": "PATIENT", "min": 1, "max": -1, "items": [
            {"seg": "PID", "min": 1, "max": 1}, {"seg": "PD1", "min": 0, "max": 1},
            {"seg": "MRG", "min": 1, "max": 1}, {"seg": "PV1", "min": 0, "max": 1}]},
    ],
}

# Vocabulary maps whose display sits in another column than the header says: name -> (column, reason).
VOCABULARY_DISPLAY_COLUMN: dict[str, tuple[int, str]] = {
    "PatientClass[EncounterClass]": (7, "the display is in column 7 (unnamed), column 8 'Display' is empty"),
}

# Vocabulary maps Hearth's engine uses though no rule of the generated maps names them.
EXTRA_VOCABULARY: set[str] = {"event[encounterstatus]"}
