"""HL7 v2 message -> FHIR R4 resources (design note b8): a pure function over the generated maps.

The message rules are walked in table order; each segment occurrence they name fills a target instance
(`Patient[1]`, `Observation[2]`), looked up outward through the enclosing group scopes and otherwise made in the
innermost repeating one (so each OBX group gets its Observation and every OBX shares the message's Patient). The
segment maps fill the instances (convert_values.py), the message links set references, Hearth's rules (rules.py)
fill what the IG leaves out, and every resource gets a computed id (connectors/identity.local_id) from its
business key and `meta.source` naming the message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping
from urllib.parse import quote
from zoneinfo import ZoneInfo

from hearth.connectors.hl7v2 import convert_rules as rules
from hearth.connectors.hl7v2 import frame
from hearth.connectors.hl7v2.config import DEFAULT_TYPES as CONFIGURED_DEFAULT
from hearth.connectors.hl7v2.convert_values import (HOP, MODEL, Built, Context, ConversionError, Node, Place, Slots,
                                                    apply_datatype, apply_segment, segment_lookup)
from hearth.connectors.hl7v2.maps import Instance, MessageRule, always, maps
from hearth.connectors.hl7v2.parse import Message, ParseError, Scope, Segment, parse
from hearth.connectors.identity import local_id

__all__ = ["Conversion", "ConversionError", "DEFAULT_TYPES", "convert", "merge_pairs"]

DEFAULT_TYPES = frozenset(CONFIGURED_DEFAULT)
Z_SEGMENT = "urn:hearth:hl7v2:z-segment"
# ROL/PRT rows of the IG "follow" a segment: these segments count as it (PD1 comes with PID, PV2 with PV1).
_FOLLOWS = {"PID": {"PID", "PD1"}, "PV1": {"PV1", "PV2"}}


@dataclass
class Conversion:
    """The resources one message makes, and what the write path needs to match Patient and Encounter."""

    event: str
    source: str
    resources: list[dict]
    patient: str | None
    patient_identifiers: list[dict]
    encounter: str | None
    encounter_identifier: dict | None


def convert(text: str, charset: str, *, connector: str, timezone: ZoneInfo = ZoneInfo("UTC"),
            types: frozenset[str] = DEFAULT_TYPES, identifier_systems: Mapping[str, str] = {},
            z_segments: str = "drop") -> Conversion:
    """Convert one decoded message ("\\r" separators, MSH first; `charset` = its Python codec)."""
    the_maps = maps()
    event_name = _event(text, charset)
    event = the_maps.event(*event_name.split("^"))
    if event is None:
        raise ConversionError(f"message {event_name} is not supported", ("MSH", "1", "9"))
    if event.map is None:
        raise ConversionError(f"{event_name} is a {event.handler}, not a conversion: use merge_pairs",
                              ("MSH", "1", "9"))
    try:
        message = parse(text, charset, the_maps.structure(event.tree))
    except ParseError as error:
        raise ConversionError(str(error)) from None
    ctx = Context(the_maps, timezone, frozenset(types), identifier_systems)
    state = _State(message, ctx)
    for rule in the_maps.message(event.map):
        state.apply(rule)
    msh = message.first("MSH")
    assert msh is not None
    source = "urn:hl7v2:" + ":".join(quote(p, safe="") for p in (connector, msh.value(3), msh.value(4),
                                                                   msh.value(10)))
    pid = message.first("PID")
    ids = identifiers(pid, 3, ctx) if pid else []
    match = _match_first(pid, ids)
    keys = rules.Keys(message, match[0] if match else None)
    rules.apply(state.instances, event_name, keys, ctx)
    if z_segments == "keep":
        _keep_z(state.instances, message)
    resources = _Finisher(connector, source, keys).run(state.instances, ctx)
    patient = next((b.reference for b in state.instances if b.type == "Patient" and b.reference), None)
    encounter = next((b.reference for b in state.instances if b.type == "Encounter" and b.reference), None)
    pv1 = message.first("PV1")
    visit = identifiers(pv1, 19, ctx) if pv1 else []
    return Conversion(event_name, source, resources, patient, match, encounter, visit[0] if visit else None)


def merge_pairs(text: str, charset: str, *, connector: str,
                identifier_systems: Mapping[str, str] = {}) -> list[tuple[list[dict], list[dict]]]:
    """For each PID/MRG pair of a merge (ADT A40): (the survivor's PID-3 Identifiers, the merged patient's MRG-1
    Identifiers), match key first. `connector` names the feed (ids are not computed here)."""
    the_maps = maps()
    message = parse(text, charset, None)
    ctx = Context(the_maps, ZoneInfo("UTC"), DEFAULT_TYPES, identifier_systems)
    pairs: list[tuple[list[dict], list[dict]]] = []
    survivor: Segment | None = None
    for segment in message.segments:
        if segment.name == "PID":
            survivor = segment
        elif segment.name == "MRG":
            if survivor is None:
                raise ConversionError("MRG without a PID before it", ("MRG", str(segment.number)))
            pairs.append((_match_first(survivor, identifiers(survivor, 3, ctx)),
                          _match_first(segment, identifiers(segment, 1, ctx))))
            survivor = None
    return pairs


def identifiers(segment: Segment, field: int, ctx: Context) -> list[dict]:
    """The FHIR Identifiers of a CX field (PID-3, MRG-1, PV1-19), in repetition order."""
    found = []
    for n, rep in enumerate(segment.reps(field)):
        node = Node()
        place = Place(node, "Patient", "identifier", (0, 1, n, 1))
        apply_datatype("CX[Identifier]", rep, place, segment_lookup(segment), ctx, rules.where(segment, field))
        item = node.get("identifier", {}).get((0, 1, n, 1))
        finished = _plain(item, "Identifier") if isinstance(item, Node) else None
        if finished and finished.get("value"):
            found.append(finished)
    return found


def _match_first(segment: Segment | None, found: list[dict]) -> list[dict]:
    """Identifiers with the match key first: the one typed MR (CX.5), else the first."""
    if segment is None or not found:
        return found
    mr = next((i for i in found if _type_code(i) == "MR"), found[0])
    return [mr, *[i for i in found if i is not mr]]


def _type_code(identifier: dict) -> str | None:
    codings = identifier.get("type", {}).get("coding", [])
    return codings[0].get("code") if codings else None


def _event(text: str, charset: str) -> str:
    """MSH-9.1^MSH-9.2 of a message."""
    header = frame.parse_header(text, charset) if text.startswith("MSH") else None
    if not isinstance(header, frame.Header):
        raise ConversionError("the message does not start with a readable MSH", ("MSH",))
    return f"{header.message_type}^{header.trigger_event}"


class _State:
    """The instances of one message and the scopes they live in."""

    def __init__(self, message: Message, ctx: Context):
        self.message, self.ctx = message, ctx
        self.instances: list[Built] = []
        self.by_scope: dict[tuple[int, str, str], Built] = {}
        self.links: set[tuple[int, str, int]] = set()
        self.present = frozenset(s.name for s in message.segments)
        # each placed segment with its scope and the previous segment of another name (for 'follow' rules), by the
        # message rule position (group path, segment name) that names it
        self.at: dict[tuple[str, ...], list[tuple[Segment, Scope, str]]] = {}
        paths: dict[int, tuple[str, ...]] = {}
        last, previous = "", ""
        for segment, scope in message.placed:
            if last and last != segment.name:
                previous = last
            last = segment.name
            path = paths.get(id(scope)) or paths.setdefault(id(scope), scope.path())
            self.at.setdefault((*path, segment.name), []).append((segment, scope, previous))

    def apply(self, rule: MessageRule) -> None:
        if rule.target is None or rule.map is None or rule.target.type not in self.ctx.types:
            return
        for segment, scope, previous in self.at.get(rule.path, ()):
            if rule.follow and previous not in _FOLLOWS.get(rule.follow, {rule.follow}):
                continue
            if rule.when is not always and not rule.when(self._lookup(segment)):
                continue
            built = self.instance(rule.target, scope, create=True)
            assert built is not None
            built.segments.setdefault(segment.name, segment)
            apply_segment(self.ctx.maps.segment(rule.map), segment, built, self.ctx)
            for link in rule.links:
                self._link(link.source, link.path, link.target, scope)

    def _lookup(self, segment: Segment):
        own = segment_lookup(segment)
        present = self.present

        def lookup(ref: str) -> list[str]:
            if len(ref) == 3 and ref.isalnum() and ref.isupper():
                return [ref] if ref in present else []
            if ref[:3] != segment.name:
                other = self.message.first(ref[:3])
                return segment_lookup(other)(ref) if other else []
            return own(ref)

        return lookup

    def instance(self, target: Instance, scope: Scope, create: bool) -> Built | None:
        """The instance a rule names, outward from the scope; made in the innermost repeating scope."""
        n = "1" if target.n in (None, "PID", 1) else str(target.n)
        home: Scope | None = None
        current: Scope | None = scope
        while current is not None:
            found = self.by_scope.get((id(current), target.type, n))
            if found is None and target.n is None:
                found = next((b for (sid, t, _), b in self.by_scope.items()
                              if sid == id(current) and t == target.type), None)
            if found is not None:
                return found
            if home is None and (current.repeating or current.parent is None):
                home = current
            current = current.parent
        if not create or home is None:
            return None
        built = Built(target.type)
        self.by_scope[(id(home), target.type, n)] = built
        self.instances.append(built)
        return built

    def _link(self, source: Instance, path: str, target: Instance | None, scope: Scope) -> None:
        if target is None or source.type not in self.ctx.types or target.type not in self.ctx.types:
            return
        origin = self.instance(source, scope, create=False)
        goal = self.instance(target, scope, create=False)
        if origin is None or goal is None or (id(origin), path, id(goal)) in self.links:
            return
        self.links.add((id(origin), path, id(goal)))
        rules.reference(origin, path.split("."), goal)


def _keep_z(instances: list[Built], message: Message) -> None:
    """z_segments = "keep": each Z segment's text as an extension of the main resource."""
    main = next((b for b in instances if b.type == "Patient"), instances[0] if instances else None)
    zs = [s for s in message.extras if s.name.startswith("Z")]
    if main is None or not zs:
        return
    slots = main.node.setdefault("extension", Slots())
    for n, segment in enumerate(zs):
        slots[(999, 0, n, 1)] = Node(url=Z_SEGMENT, valueString=segment.text)


class _Finisher:
    """Builders -> FHIR JSON: ids, references, pruning, array-or-single per the R4 model."""

    def __init__(self, connector: str, source: str, keys: "rules.Keys"):
        self.connector, self.source, self.keys = connector, source, keys
        self.out: list[dict] = []
        self.made: set[str] = set()
        self.busy: set[int] = set()

    def run(self, instances: list[Built], ctx: Context) -> list[dict]:
        for built in instances:
            built.key = self.keys.key(built)
            if built.key is None and built.type in ("Patient", "Encounter"):
                built.dropped = True
        for built in [*instances, *ctx.children]:
            self.finish(built)
        return self.out

    def finish(self, built: Built) -> str | None:
        """The reference to a built resource, finishing it first (None when it is left out)."""
        if built.reference or built.dropped or id(built) in self.busy:
            return built.reference
        self.busy.add(id(built))
        content = self.node(built.node, built.type)
        self.busy.discard(id(built))
        if not content or _missing(built.type, content):
            built.dropped = True
            return None
        key = built.key or json.dumps(content, sort_keys=True, ensure_ascii=False)
        resource_id = local_id(self.connector, f"{built.type}|{key}")
        built.reference = f"{built.type}/{resource_id}"
        if built.reference not in self.made:  # the same practitioner or location named twice: one resource
            self.made.add(built.reference)
            meta = {**content.pop("meta", {}), "source": self.source}
            self.out.append({"resourceType": built.type, "id": resource_id, "meta": meta, **content})
        return built.reference

    def node(self, node: Node, type_name: str) -> dict | None:
        out: dict = {}
        choices: set[str] = set()
        elements = MODEL.elements(type_name)
        for name, value in node.items():
            element = elements.get(name)
            if element is None or element.choice and element.choice in choices:
                continue
            if isinstance(value, Slots):
                done = [v for v in (self.item(value[k], element.type) for k in sorted(value)) if v not in _EMPTY]
                if not done:
                    continue
                out[name] = done if element.many else done[0]
            else:
                if isinstance(value, Node):
                    value = self.item(value, element.type)
                if value in _EMPTY:
                    continue
                out[name] = [value] if element.many else value
            if element.choice:
                choices.add(element.choice)
        out = rules.tidy(type_name, out)
        if out and _missing(type_name, out):
            return None
        return out or None

    def item(self, value, type_name: str):
        if isinstance(value, Node):
            if HOP in value:
                reference = self.finish(value[HOP])
                if reference is None:
                    return None
                return {"reference": reference, **({"display": value["display"]} if value.get("display") else {})}
            return self.node(value, type_name)
        return value


_EMPTY = (None, "", {}, [])  # finished values that say nothing (compared by ==, as `in` does)


def _missing(type_name: str, content: dict) -> bool:
    """Whether a required element (or every variant of a required choice) is absent."""
    required = _required(type_name)
    if not required:
        return False
    elements = MODEL.elements(type_name)
    present = {elements[name].choice or name for name in content if name in elements}
    return not required <= present


@lru_cache(maxsize=None)
def _required(type_name: str) -> frozenset[str]:
    """The required elements of a type (a choice by its base name)."""
    return frozenset(e.choice or name for name, e in MODEL.elements(type_name).items() if e.required)


def _plain(node: Node, type_name: str) -> dict | None:
    """A built element without references as JSON (identifiers)."""
    return _Finisher("", "", rules.Keys.none()).node(node, type_name)
