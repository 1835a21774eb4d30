"""Hearth's rules where the IG's maps leave a gap (design note a1, defects 3-9 and 18; b9): business keys for ids,
status fallbacks, reference ranges, Appointment participants, and the links the message rules set."""

from __future__ import annotations

import re
from typing import Any

from hearth.connectors.hl7v2 import systems
from hearth.connectors.hl7v2.convert_values import (HOP, MODEL, Built, Context, Node, Place, Slots, Where,
                                                    apply_datatype, segment_lookup, typed_value)
from hearth.connectors.hl7v2.dtm import InvalidTime, to_fhir
from hearth.connectors.hl7v2.parse import Message, Segment

# OBX-11 (HL7 table 0085) -> Observation.status: the IG's codes plus Hearth's fallbacks for B, I, N, O, R, S, U, V.
OBSERVATION_STATUS = {"F": "final", "C": "corrected", "P": "preliminary", "X": "cancelled", "D": "entered-in-error",
                      "W": "entered-in-error", "A": "amended", "B": "amended", "I": "registered", "O": "registered",
                      "R": "preliminary", "S": "preliminary", "U": "final", "V": "final", "N": "final"}
# RXA-20 (HL7 table 0322) -> Immunization.status; empty -> completed.
IMMUNIZATION_STATUS = {"CP": "completed", "PA": "completed", "RE": "not-done", "NA": "not-done"}
# SCH-25 (HL7 table 0278) -> Appointment.status; empty -> by trigger (S15 cancelled, S26 noshow, else booked).
APPOINTMENT_STATUS = {"PENDING": "pending", "WAITLIST": "waitlist", "BOOKED": "booked", "STARTED": "checked-in",
                      "COMPLETE": "fulfilled", "CANCELLED": "cancelled", "DELETED": "entered-in-error",
                      "NOSHOW": "noshow", "OVERBOOK": "booked", "BLOCKED": "proposed", "DISCONTINUED": "cancelled"}
TRIGGER_STATUS = {"S15": "cancelled", "S26": "noshow"}
NULL_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor", "code": "UNK", "display": "unknown"}
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*|\s*([<>])=?\s*(-?\d+(?:\.\d+)?)\s*")


def where(segment: Segment, field: int) -> Where:
    return Where(segment.name, segment.number, field)


class Keys:
    """Business keys of the instances of one message (design note b9); None: computed from content."""

    def __init__(self, message: Message | None, match: dict | None):
        self.message = message
        self.patient = f"{match.get('system', '')}|{match['value']}" if match else None
        self.seen: dict[tuple, int] = {}

    @classmethod
    def none(cls) -> "Keys":
        return cls(None, None)

    def key(self, built: Built) -> str | None:
        seg = built.segments
        kind = built.type
        if kind == "Patient":
            return self.patient
        if kind == "Encounter":
            pv1 = seg.get("PV1") or (self.message.first("PV1") if self.message else None)
            visit = pv1 and (_cx(pv1, 19) or pv1.value(44))
            return f"{self.patient}|{visit}" if visit and self.patient else None
        if kind == "DiagnosticReport" and "OBR" in seg:
            obr = seg["OBR"]
            msh = self.message.first("MSH") if self.message else None
            return (_ei(obr, 3) or _ei(obr, 2)
                    or f"{msh.value(10) if msh else ''}|{obr.value(1)}")
        if kind == "Observation" and "OBX" in seg:
            obx = seg["OBX"]
            return self._nth(built.owner.key if built.owner else self.patient, obx.value(3, 3), obx.value(3, 1),
                             obx.value(4))
        if kind == "Specimen":
            spm = seg.get("SPM")
            owner = built.owner.key if built.owner else self.patient
            return (spm and (spm.value(2, 1, 1) or spm.value(2, 2, 1))) or self._nth(owner, "specimen")
        if kind == "ServiceRequest":
            orc, obr = seg.get("ORC"), seg.get("OBR")
            return (orc and _ei(orc, 2)) or (obr and _ei(obr, 2)) or None
        if kind == "Immunization":
            orc, rxa = seg.get("ORC"), seg.get("RXA")
            return ((orc and (_ei(orc, 3) or _ei(orc, 2)))
                    or (rxa and f"{self.patient}|{rxa.value(3)}|{rxa.value(5, 1)}") or None)
        if kind == "Appointment" and "SCH" in seg:
            return _ei(seg["SCH"], 2) or _ei(seg["SCH"], 1) or None
        if kind == "RelatedPerson" and "NK1" in seg:
            nk1 = seg["NK1"]
            return f"{self.patient}|{'^'.join(c[0] for c in nk1.reps(2)[0]) if nk1.reps(2) else nk1.value(1)}" \
                   f"|{nk1.value(3)}"
        if kind == "Coverage":
            in1, pv1 = seg.get("IN1"), seg.get("PV1")
            if in1:
                return f"{self.patient}|{in1.value(3)}|{in1.value(36)}"
            return f"{self.patient}|{pv1.value(20)}" if pv1 else None
        return None

    def _nth(self, *parts: Any) -> str:
        """Parts plus the n-th time they were seen in this message (repeated OBX-3 with the same sub-id)."""
        self.seen[parts] = self.seen.get(parts, 0) + 1
        return "|".join(str(p or "") for p in parts) + f"|{self.seen[parts]}"


def _ei(segment: Segment, field: int) -> str:
    """An EI's entity id and namespace ('' when no id)."""
    value = segment.value(field, 1)
    return f"{value}|{segment.value(field, 2)}" if value else ""


def _cx(segment: Segment, field: int) -> str:
    value = segment.value(field, 1)
    return f"{value}|{segment.value(field, 4)}" if value else ""


def reference(origin: Built, path: list[str], goal: Built) -> None:
    """A message link: the reference at `path` in `origin`; an array on the way gets a new item per link."""
    node, type_name = origin.node, origin.type
    for i, name in enumerate(path):
        element = MODEL.elements(type_name).get(name)
        if element is None:
            return
        last = i == len(path) - 1
        child = Node({HOP: goal}) if last else Node()
        if element.many:
            slots = node.setdefault(name, Slots())
            if not isinstance(slots, Slots):
                return
            slots[(1000, len(slots), 0, 1)] = child
        elif last:
            if name in node:
                return
            node[name] = child
        else:
            child = node.setdefault(name, child)
        if last:
            if name in ("result", "partOf", "specimen", "basedOn", "focus"):
                goal.owner = goal.owner or origin
            return
        node, type_name = child, element.type


# ------------------------------------------------------------------------------------------------ per type


def apply(instances: list[Built], event: str, keys: Keys, ctx: Context) -> None:
    """Hearth's rules on the built instances, before ids are computed."""
    trigger = event.split("^")[1]
    patient = next((b for b in instances if b.type == "Patient"), None)
    for built in instances:
        rule = _RULES.get(built.type)
        if rule:
            rule(built, trigger, patient, keys.message, ctx)


def _encounter(built: Built, trigger: str, patient: Built | None, message: Message | None, ctx: Context) -> None:
    """A03 finished, A11 cancelled, A13 in-progress without period.end; else the IG (PV1-45, patient class)."""
    node = built.node
    if trigger == "A03":
        node["status"] = "finished"
    elif trigger == "A11":
        node["status"] = "cancelled"
    elif trigger == "A13":
        node["status"] = "in-progress"
        if isinstance(node.get("period"), Node):
            node["period"].pop("end", None)
    node.setdefault("status", "unknown")
    if not node.get("class"):
        node["class"] = Node(NULL_CLASS)


def _observation(built: Built, trigger: str, patient: Built | None, message: Message | None,
                 ctx: Context) -> None:
    """OBX-11 status with fallbacks (N, not asked: no value, the IG's dataAbsentReason says why); OBX-7 parsed into
    referenceRange low/high with OBX-6's units."""
    obx = built.segments.get("OBX")
    if obx is None:
        built.node.setdefault("status", "final")
        return
    status = obx.value(11).strip().upper()
    built.node["status"] = OBSERVATION_STATUS.get(status, "final")
    if status == "N":  # obs-6: a dataAbsentReason only where there is no value[x]
        for name in [name for name in built.node if name.startswith("value")]:
            del built.node[name]
    match = _RANGE.fullmatch(obx.value(7))
    if not match:
        return
    ranges = built.node.setdefault("referenceRange", Slots())
    item = ranges.get(min(ranges)) if ranges else ranges.setdefault((0, 1, 0, 1), Node())
    low, high = (match.group(1), match.group(2)) if match.group(1) else (
        (match.group(4), None) if match.group(3) == ">" else (None, match.group(4)))
    for name, value in (("low", low), ("high", high)):
        if value is not None:
            item[name] = Node(value=typed_value(value, "decimal", ctx, where(obx, 7)), **_units(obx))


def _units(obx: Segment) -> dict:
    """Quantity unit, system and code from OBX-6 (CWE: code, text, coding system)."""
    code, unit, system = obx.value(6, 1), obx.value(6, 2), systems.coding_system(obx.value(6, 3))
    out = {"unit": unit or code} if unit or code else {}
    if system and code:
        out.update(system=system, code=code)
    return out


def _report(built: Built, trigger: str, patient: Built | None, message: Message | None, ctx: Context) -> None:
    """OBR-25 empty or unmapped: unknown (the IG would refuse the message)."""
    built.node.setdefault("status", "unknown")


def _immunization(built: Built, trigger: str, patient: Built | None, message: Message | None,
                  ctx: Context) -> None:
    rxa = built.segments.get("RXA")
    if rxa is not None and rxa.value(21).upper() != "D":
        built.node["status"] = IMMUNIZATION_STATUS.get(rxa.value(20).strip().upper(), "completed")
    built.node.setdefault("status", "completed")
    if patient is not None and "patient" not in built.node and "Patient" in ctx.types:
        built.node["patient"] = Node({HOP: patient})


def _service_request(built: Built, trigger: str, patient: Built | None, message: Message | None,
                     ctx: Context) -> None:
    built.node.setdefault("status", "unknown")
    built.node.setdefault("intent", "order")
    if patient is not None and "subject" not in built.node:
        built.node["subject"] = Node({HOP: patient})


def _coverage(built: Built, trigger: str, patient: Built | None, message: Message | None, ctx: Context) -> None:
    built.node.setdefault("status", "active")


def _appointment(built: Built, trigger: str, patient: Built | None, message: Message | None,
                 ctx: Context) -> None:
    """Status from SCH-25 (else by trigger: S15 cancelled, S26 noshow, else booked); start/end from SCH-11 or the
    first AIS/AIG/AIL/AIP; participants rebuilt: the Patient (accepted), each AIP person, each AIL location, with
    a status following the appointment's (booked/arrived/fulfilled/checked-in: accepted; cancelled/noshow/
    entered-in-error: declined; else needs-action)."""
    node = built.node
    sch = built.segments.get("SCH") or (message.first("SCH") if message else None)
    filler = sch.value(25).strip().upper() if sch else ""
    node["status"] = APPOINTMENT_STATUS.get(filler) or TRIGGER_STATUS.get(trigger, "booked")
    if message is not None:
        _timing(node, sch, message, ctx)
    status = node["status"]
    answer = ("accepted" if status in ("booked", "arrived", "fulfilled", "checked-in") else
              "declined" if status in ("cancelled", "noshow", "entered-in-error") else "needs-action")
    participants = Slots()
    if patient is not None and "Patient" in ctx.types:
        participants[(0, 0, 0, 0)] = Node(actor=Node({HOP: patient}), status="accepted")
    for n, segment in enumerate(message.all("AIP") + message.all("AIL") if message else []):
        field, kind, dt = (3, "Practitioner", "XCN[Practitioner]") if segment.name == "AIP" else (
            3, "Location", "PL[Location]")
        reps = segment.reps(field)
        if not reps or kind not in ctx.types:
            continue
        actor = Node({HOP: Built(kind)})
        ctx.children.append(actor[HOP])
        apply_datatype(dt, reps[0], Place(actor, "Reference", HOP, ()), segment_lookup(segment), ctx,
                       where(segment, field))
        participants[(1, n, 0, 0)] = Node(actor=actor, status=answer)
    node["participant"] = participants


def _timing(node: Node, sch: Segment | None, message: Message, ctx: Context) -> None:
    start = end = ""
    if sch is not None:
        start, end = sch.value(11, 4), sch.value(11, 5)
    if not start:
        for name, field in (("AIS", 4), ("AIG", 8), ("AIL", 6), ("AIP", 6)):
            segment = message.first(name)
            if segment is not None and segment.value(field):
                start = segment.value(field)
                break
    for name, value, field in (("start", start, 11), ("end", end, 11)):
        if value and sch is not None:
            try:
                node[name] = to_fhir(value, "instant", ctx.zone)
            except InvalidTime:
                continue  # a date without a time of day: an Appointment's start is an instant


_RULES = {"Encounter": _encounter, "Observation": _observation, "DiagnosticReport": _report,
          "Immunization": _immunization, "ServiceRequest": _service_request, "Coverage": _coverage,
          "Appointment": _appointment}


# backbone elements that say nothing without their participant: element -> the participant's reference
_WHO = {"Encounter.participant": "individual", "Appointment.participant": "actor"}


def tidy(type_name: str, out: dict) -> dict:
    """Last touches on a finished element: an extension without a value says nothing (ext-1), and one whose url
    is no absolute URI is one the IG left undefined."""
    if type_name in _WHO and _WHO[type_name] not in out:
        return {}  # a participant's role without the participant (its type is not made)
    if type_name == "Extension" and ("extension" not in out and not any(k.startswith("value") for k in out)
                                     or ":" not in out.get("url", "")):
        return {}
    return out

