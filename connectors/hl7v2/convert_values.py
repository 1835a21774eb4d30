"""The field level of the engine: segment and data type map rules applied to v2 values, building FHIR elements
typed by Hearth's R4 element model (capability/elements.py), then turned into JSON.

Building happens in `Node`s (element -> value). An array element holds `Slots` keyed by (slot, repetition, sibling)
so that every row naming `identifier[2]` fills the same Identifier and repetitions follow in order. A `(Type)` hop
makes a child `Built` resource; its id is computed when it is finished (convert.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping, NamedTuple
from zoneinfo import ZoneInfo

from hearth.capability.bindings import bound_code, required_bindings
from hearth.capability.elements import Element, element_model
from hearth.connectors.hl7v2 import systems
from hearth.connectors.hl7v2.dtm import InvalidTime, to_fhir
from hearth.connectors.hl7v2.maps import FieldMap, Maps, Rule, Step
from hearth.connectors.hl7v2.parse import Rep, Segment

CODED = frozenset({"Coding", "Quantity", "SimpleQuantity", "Age", "Count", "Distance", "Duration", "MoneyQuantity"})
URIS = frozenset({"uri", "url", "canonical", "oid", "uuid"})
TIMES = frozenset({"date", "dateTime", "instant", "time"})
INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt"})
_SPACE = re.compile(r"\s")  # str.isspace() characters (both use Py_UNICODE_ISSPACE)
_REF = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d+)(?:\.(\d+))?(?:\.(\d+))?$|^([A-Z]{2,3})\.(\d+)(?:\.(\d+))?$")


class ConversionError(ValueError):
    """A message that cannot be converted; .location like ("PID","1","7") or (); str(e) a clear text for a person."""

    def __init__(self, text: str, location: tuple[str, ...] = ()):
        super().__init__(text)
        self.location = location

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.location))  # crosses from the conversion worker with its location


class Node(dict):
    """A complex element (or a resource's content) being built."""


class Slots(dict):
    """The items of an array element being built: sort key -> item."""


@dataclass
class Built:
    """A resource being built: a message instance (Patient[1]) or a hop's child (a Practitioner of PV1-7)."""

    type: str
    node: Node = field(default_factory=Node)
    segments: dict[str, Segment] = field(default_factory=dict)  # the first segment of each name applied to it
    key: str | None = None  # the business key its id is computed from (None: from its content)
    dropped: bool = False
    reference: str | None = None  # "Type/id" once finished
    owner: "Built | None" = None  # the report (or other resource) that lists it, for its business key
    spaces: dict[str, int] = field(default_factory=dict)  # segment map name -> its slot space (see walk)


@dataclass
class Context:
    """What the rules of one message need besides the values."""

    maps: Maps
    zone: ZoneInfo
    types: frozenset[str]
    identifier_systems: Mapping[str, str]
    children: list[Built] = field(default_factory=list)  # hop resources, in the order they were made


class Where(NamedTuple):
    """The v2 position a value comes from, for errors (a tuple: one is made for every value written)."""

    segment: str
    number: int
    field: int
    comp: int | None = None

    def location(self) -> tuple[str, ...]:
        return (self.segment, str(self.number), str(self.field), *(() if self.comp is None else (str(self.comp),)))

    def name(self) -> str:
        return f"{self.segment}-{self.field}" + ("" if self.comp is None else f".{self.comp}")


MODEL = element_model()
_BINDINGS = required_bindings()
_CHECKS: dict[str, Callable[[str], Any]] = {}


def in_binding(type_name: str, prop: str, code: str) -> bool:
    """Whether a code may stand in an element with a required binding (True when it has none)."""
    valueset = _BINDINGS.get(type_name, {}).get(prop)
    if valueset is None:
        return True
    check = _CHECKS.get(valueset) or _CHECKS.setdefault(valueset, bound_code(valueset, lambda v: None))
    return check(code) is None


def text(parts: list[list[str]], c: int, s: int = 1) -> str:
    """Component c (subcomponent s) of a value given as its parts."""
    return parts[c - 1][s - 1] if c <= len(parts) and s <= len(parts[c - 1]) else ""


def flat(parts: list[list[str]]) -> str:
    """A whole value as one comparable string ('' when nothing is valued)."""
    return "^".join("&".join(p) for p in parts).rstrip("^&") if any(s for p in parts for s in p) else ""


@lru_cache(maxsize=4096)
def parse_ref(ref: str) -> tuple[str, int, int | None, int | None] | None:
    """'PID-11.9' -> ('PID', 11, 9, None); 'XPN.12' -> ('XPN', 12, None, None) with the type as the name;
    None for anything else."""
    match = _REF.match(ref)
    if not match:
        return None
    if match.group(1):
        c, s = match.group(3), match.group(4)
        return match.group(1), int(match.group(2)), int(c) if c else None, int(s) if s else None
    return match.group(5), int(match.group(6)), int(match.group(7)) if match.group(7) else None, None


def segment_lookup(segment: Segment, current: tuple[int, int] | None = None) -> Callable[[str], list[str]]:
    """A condition Lookup over one segment (other segment names: presence only is unknown here, so empty).
    `current` = (field, repetition): references to that field read that repetition."""

    # the many rows testing OBX-2 read it once; a whole-segment read is the same for every map applied to it
    memo: dict[str, list[str]] = segment.memo if current is None else {}

    def lookup(ref: str) -> list[str]:
        found = memo.get(ref)
        if found is None:
            found = memo[ref] = read(ref)
        return found

    def read(ref: str) -> list[str]:
        parsed = parse_ref(ref)
        if parsed is None or parsed[0] != segment.name or "-" not in ref:
            return [segment.name] if ref == segment.name else []
        _, n, c, s = parsed
        reps = segment.fields[n] if n < len(segment.fields) else []
        if current and current[0] == n and current[1] < len(reps):
            reps = [reps[current[1]]]
        if c is None:
            return [flat(r) for r in reps]
        return [text(r, c, s or 1) for r in reps]

    return lookup


# ------------------------------------------------------------------------------------------------ placing


@dataclass(slots=True)
class Place:
    """An element position: the node holding it, that node's type, the element name and its slot key."""

    node: Node
    type: str
    name: str
    key: tuple


def resolve(place: Place, ctx: Context, create: bool = True) -> tuple[Any, str] | None:
    """The item at a place and its type: a Node for a complex type (a hop: the child resource's content), or
    (the value or None, type) for a primitive."""
    if place.name == HOP:
        built = place.node[HOP]
        return built.node, built.type
    if place.name == "":
        return place.node, place.type
    element = _element(place.type, place.name)
    if element is None:
        return None
    return _item(place.node, place.name, place.key, element, create), element.type


def _item(node: Node, name: str, key: tuple, element: Element, create: bool = True) -> Any:
    """The item of an element of a node (resolve with the element known)."""
    holder = node.get(name)
    if element.many:
        if holder is None:
            holder = node[name] = Slots()
        item = holder.get(key)
        if item is None and create and element.type not in _PRIMITIVES:
            item = holder[key] = Node()
        return item
    if holder is None and create and element.type not in _PRIMITIVES:
        holder = node[name] = Node()
    return holder


HOP = "$hop"  # the key of a Reference node that points to a child resource being built
_PRIMITIVES = MODEL.primitives
_ELEMENTS: dict[tuple[str, str], Element | None] = {}  # (type, element name) -> its element, looked up once


def _element(type_name: str, name: str) -> Element | None:
    key = (type_name, name)
    try:
        return _ELEMENTS[key]
    except KeyError:
        found = _ELEMENTS[key] = MODEL.elements(type_name).get(name)
        return found


# A path compiled for the type it starts from: per step (step, its element, its slot number); the element is None
# where the R4 model has no such element (the walk stops there). Paths and types are static: compiled once.
Compiled = tuple[tuple[Step, "Element | None", Any], ...]
_COMPILED: dict[tuple[int, str], tuple[tuple[Step, ...], Compiled]] = {}


def compile_path(steps: tuple[Step, ...], type_name: str) -> Compiled:
    """The compiled form of a path from a type (cached by the path's identity, which the maps keep alive)."""
    cached = _COMPILED.get((id(steps), type_name))
    if cached is not None and cached[0] is steps:
        return cached[1]
    out = []
    kind = type_name
    for step in steps:
        element = _element(kind, step.element)
        slot = step.slot[0] if isinstance(step.slot, tuple) else (1 if step.slot in (None, "each") else step.slot)
        out.append((step, element, slot))
        if element is None:
            break
        kind = step.hop or element.type
    compiled = tuple(out)
    _COMPILED[(id(steps), type_name)] = steps, compiled
    return compiled


def walk(node: Node, type_name: str, steps: tuple[Step, ...], rep: int | None, ctx: Context,
         space: int = 0) -> Place | None:
    """The place a path leads to from a node (creating what is on the way), None when the R4 model has no such
    element or a hop goes to a type that is not made. `rep` goes into the key of the first array on the way;
    `space` keeps the slots of different segment maps apart (PID's extension[1] is not PD1's).
    A path ending with a hop gives the Reference node's HOP place (data type maps then fill the child)."""
    compiled = compile_path(steps, type_name)
    last = len(steps) - 1
    for i, (step, element, slot) in enumerate(compiled):
        if element is None:
            return None
        key: tuple = ()
        if element.many:
            key, rep = (space, slot, rep or 0, 1), None
        if step.hop:
            if element.type != "Reference" or step.hop not in ctx.types:
                return None
            reference = _item(node, step.element, key, element)
            if not isinstance(reference, Node):
                return None
            built = reference.get(HOP)
            if not isinstance(built, Built) or built.type != step.hop:
                built = reference[HOP] = Built(step.hop)
                ctx.children.append(built)
            if i == last:
                return Place(reference, "Reference", HOP, ())
            node, type_name = built.node, built.type
            continue
        if i == last:
            return Place(node, type_name, step.element, key)
        found = _item(node, step.element, key, element)
        if not isinstance(found, Node):
            return None
        node, type_name = found, element.type
    return None


# ------------------------------------------------------------------------------------------------ writing


def write(place: Place, value: str, ctx: Context, where: Where, mapped: bool = False) -> None:
    """A primitive value at a place, converted to the element's R4 type; empty values write nothing.
    `mapped`: the value came from the v2 data (not a constant), so a coding system name is translated."""
    if place.name == HOP:
        return  # a primitive where a resource is expected: the IG row names no element
    element = _element(place.type, place.name)
    if element is None or not value:
        return
    kind = element.type
    if kind not in _PRIMITIVES:
        return  # the IG row names a complex element for a plain value (Specimen.note, component.valueQuantity)
    if place.name == "system" and mapped and place.type in CODED:
        value = systems.coding_system(value) or ""
    if kind in ("string", "markdown"):
        value = value.replace("\r\n", "\n").replace("\r", "\n")  # \X0D\ and \.br\ alike: one line break
    typed = typed_value(value if kind in ("string", "markdown") else value.strip(), kind, ctx, where)
    if typed is None or typed == "":
        return
    if kind == "code" and not in_binding(place.type, place.name, typed):
        return
    if kind in URIS and _SPACE.search(typed):
        return  # 'Payor ID' written where a URI belongs: no URI
    if element.many:
        place.node.setdefault(place.name, Slots()).setdefault(place.key, typed)
    else:
        existing = place.node.get(place.name)
        if existing is None or isinstance(existing, Node) and not existing:
            place.node[place.name] = typed


def typed_value(value: str, kind: str, ctx: Context, where: Where) -> Any:
    """A v2 text as the JSON value of an R4 primitive."""
    if kind in TIMES:
        try:
            return to_fhir(value, kind, ctx.zone)
        except InvalidTime as error:
            raise ConversionError(f"{where.name()}: {error}", where.location()) from None
    if kind == "decimal":
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ConversionError(f"{where.name()}: {value!r} is not a number", where.location()) from None
        if not number.is_finite():
            raise ConversionError(f"{where.name()}: {value!r} is not a number", where.location())
        # a Decimal, as Hearth parses stored JSON (capability/fhir_json.py): the message's digits are kept, and a
        # message converted again compares equal to what it made before (a float never equals a Decimal)
        return int(number) if number == number.to_integral_value() and "." not in value else number
    if kind in INTEGERS:
        if not re.fullmatch(r"[+-]?\d+", value):
            raise ConversionError(f"{where.name()}: {value!r} is not a whole number", where.location())
        number = int(value)
        return None if kind == "positiveInt" and number < 1 or kind == "unsignedInt" and number < 0 else number
    if kind == "boolean":
        return {"Y": True, "TRUE": True, "N": False, "FALSE": False}.get(value.upper())
    return value


# ------------------------------------------------------------------------------------------------ rules


def apply_segment(fmap: FieldMap, segment: Segment, built: Built, ctx: Context) -> None:
    """Every rule of a segment map whose condition holds, for each repetition of its field."""
    space = built.spaces.setdefault(fmap.name, len(built.spaces))
    plan = _plan(fmap)
    each = max((len(segment.reps(n)) for n in plan.each), default=1)
    whole = segment_lookup(segment)
    by_field = plan.by_number
    holds = segment.holds
    for i in sorted(i for n in segment.filled() for i in by_field.get(n, ())):  # the rules of valued fields
        rule, is_each = plan.rules[i]
        reps = segment.reps(rule.field)
        last = len(reps) - 1
        for r in range(each if is_each else last + 1):
            rep = reps[r] if r < last else reps[last]
            if rule.condition is not None:
                if last:
                    if not rule.when(segment_lookup(segment, (rule.field, segment.fields[rule.field].index(rep)))):
                        continue
                else:
                    # many rows share a condition (every OBX-6 row tests OBX-2): decided once per segment
                    holds_here = holds.get(rule.when)
                    if holds_here is None:
                        holds_here = holds[rule.when] = rule.when(whole)
                    if not holds_here:
                        continue
            place = walk(built.node, built.type, rule.path, r, ctx, space)
            if place is not None:
                _apply_value(rule, rep, place, whole, ctx, Where(segment.name, segment.number, rule.field))


@dataclass(frozen=True)
class _Plan:
    """A map ready to apply: the rules Hearth applies, in table order, with whether each fills one element per
    repetition of an '[each]' driver; their positions by field (segment maps) or component (data type maps,
    None: the whole value); the fields that drive '[each]'; the elements the rules' paths start with."""

    rules: tuple[tuple[Rule, bool], ...]
    by_number: dict[int | None, tuple[int, ...]]
    each: tuple[int, ...]
    heads: frozenset[str]


_PLANS: dict[int, tuple[FieldMap, _Plan]] = {}


def _plan(fmap: FieldMap) -> _Plan:
    """The plan of a map, made once (maps are static). Segment maps: '$this' rows make other resources (Hearth does
    not), no-field rows have nothing to read. Data type maps: a whole-value row only assigns."""
    cached = _PLANS.get(id(fmap))
    if cached is not None and cached[0] is fmap:
        return cached[1]
    if fmap.resource:
        usable = [r for r in fmap.rules if r.path and r.field is not None]
    else:
        usable = [r for r in fmap.rules if r.comp is not None or r.assign is not None]
    rules = tuple((r, any(s.slot == "each" for s in r.path)) for r in usable)
    by_number: dict[int | None, list[int]] = {}
    for i, (rule, _) in enumerate(rules):
        by_number.setdefault(rule.field if fmap.resource else rule.comp, []).append(i)
    plan = _Plan(rules, {n: tuple(found) for n, found in by_number.items()},
                 tuple(sorted({r.field for r, each in rules if each})),
                 frozenset(r.path[0].element for r in fmap.rules if r.path))
    _PLANS[id(fmap)] = fmap, plan
    return plan


def _apply_value(rule: Rule, parts: Rep, place: Place, outer: Callable[[str], list[str]], ctx: Context,
                 where: Where) -> None:
    """One value (a repetition, or a component's subcomponents as parts) through a rule: an assignment, a data
    type map, a vocabulary, or the value itself."""
    if rule.assign is not None:
        value = _assigned(rule.assign, outer)
        write(place, value, ctx, where, mapped="concat" in rule.assign)
        return
    if rule.vocab:
        _vocabulary(rule, parts, place, outer, ctx, where)
        return
    if rule.dt:
        apply_datatype(rule.dt, parts, place, outer, ctx, where)
        return
    write(place, text(parts, 1), ctx, where, mapped=True)


def _assigned(assign: dict, lookup: Callable[[str], list[str]]) -> str:
    if "const" in assign:
        return assign["const"]
    values = []
    for piece in assign["concat"]:
        if isinstance(piece, str):
            values.append(piece)
            continue
        found = lookup(piece["ref"])
        values.append(found[0] if found else "")
    return "".join(values) if any(isinstance(p, dict) and v for p, v in zip(assign["concat"], values)) else ""


def _datatype_lookup(parts: Rep, outer: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """Conditions inside a data type map: 'XPN.12' reads the value's own component, 'PID-5' the segment."""

    def lookup(ref: str) -> list[str]:
        parsed = parse_ref(ref)
        if parsed and "-" not in ref:
            return [text(parts, parsed[1], parsed[2] or 1)]
        return outer(ref)

    return lookup


def apply_datatype(name: str, parts: Rep, place: Place, outer: Callable[[str], list[str]], ctx: Context,
                   where: Where) -> None:
    """A data type map over one value at a place (a few are Hearth's own, see SPECIAL)."""
    special = SPECIAL.get(name)
    if special is not None:
        special(parts, place, ctx, where)
        return
    plan = _plan(ctx.maps.datatype(name))
    lookup = _datatype_lookup(parts, outer)
    if place.name and place.name in plan.heads:
        # maps such as FN (XPN.1 -> family) and SAD (XAD.1 -> line) name the element again: relative to its parent
        place = Place(place.node, place.type, "", ())
    by_comp = plan.by_number
    order = [*by_comp.get(None, ()), *(i for c, component in enumerate(parts, 1) if any(component)
                                       for i in by_comp.get(c, ()))]
    order.sort()
    for i in order:  # the whole-value rows and the rows of valued components, in table order
        rule = plan.rules[i][0]
        if rule.condition is not None and not rule.when(lookup):
            continue
        comp_parts = parts if rule.comp is None else [[s] for s in parts[rule.comp - 1]]
        target = _relative(place, rule.path, ctx)
        if target is None:
            continue
        _apply_value(rule, comp_parts, target, lookup, ctx, Where(where.segment, where.number, where.field, rule.comp))


def _relative(place: Place, steps: tuple[Step, ...], ctx: Context) -> Place | None:
    """The place of a data type rule's path relative to the element the value fills ('[k]' first: the k-th
    sibling element the value makes, such as XPN.15's nickname)."""
    if steps and steps[0].element == "":
        sibling = steps[0].slot if isinstance(steps[0].slot, int) else 1
        if place.name == HOP:
            return None  # siblings of a resource: the IG's multi-resource forms (PL), done by Hearth's own code
        place = Place(place.node, place.type, place.name, place.key[:-1] + (sibling,) if place.key else ())
        steps = steps[1:]
    if not steps:
        return place
    found = resolve(place, ctx)
    if found is None or not isinstance(found[0], Node):
        return None
    return walk(found[0], found[1], steps, None, ctx)


def _vocabulary(rule: Rule, parts: Rep, place: Place, outer: Callable[[str], list[str]], ctx: Context,
                where: Where) -> None:
    """A coded value through its vocabulary map: a code gets the mapped code (nothing when unmapped), a Coding the
    mapped coding, a CodeableConcept the v2 codings plus the mapped one (and the table's system when the v2 value
    names none)."""
    vocabulary = ctx.maps.vocabulary(rule.vocab)
    code = text(parts, 1).strip()
    mapped = vocabulary.get(code) if code else None
    found = resolve(place, ctx, create=False)
    kind = found[1] if found else None
    if kind in ("code", "boolean", "string") or kind is None:
        if mapped and mapped.code == "mobile" and place.type == "ContactPoint" and place.name == "system":
            # the IG maps XTN.3 CP to a use code: Hearth makes it a phone whose use is mobile (CP wins over XTN.2)
            write(place, "phone", ctx, where)
            place.node["use"] = "mobile"
        elif mapped and mapped.code:
            write(place, mapped.code, ctx, where)
            if place.type == "Coding" and mapped.system:
                write(Place(place.node, "Coding", "system", ()), mapped.system, ctx, where)
        return
    if kind == "Coding" and mapped and mapped.code:
        _coding(place, mapped.code, mapped.display, mapped.system, ctx, where)
        return
    if rule.dt:
        apply_datatype(rule.dt, parts, place, outer, ctx, where)
    else:
        write(place, code, ctx, where)
    if kind != "CodeableConcept":
        return
    item = resolve(place, ctx)
    if item is None or not isinstance(item[0], Node):
        return
    codings = item[0].get("coding")
    first = codings.get(min(codings)) if isinstance(codings, Slots) and codings else None
    if isinstance(first, Node) and "system" not in first:
        system = systems.table_system(vocabulary.table or ctx.maps.table(vocabulary.name))
        if mapped and mapped.code and not system:
            del codings[min(codings)]  # the v2 code without a system says no more than the mapped coding
        elif system and first.get("code"):
            first["system"] = system
    if mapped and mapped.code and not (isinstance(first, Node) and first.get("code") == mapped.code
                                       and first.get("system") == mapped.system):
        _coding(Place(item[0], "CodeableConcept", "coding", (-1, 0, 0, 0)), mapped.code, mapped.display,
                mapped.system, ctx, where)


def _coding(place: Place, code: str, display: str | None, system: str | None, ctx: Context, where: Where) -> None:
    for name, value in (("system", system), ("code", code), ("display", display)):
        target = walk_one(place, name, ctx)
        if target is not None and value:
            write(target, value, ctx, where)


def walk_one(place: Place, name: str, ctx: Context) -> Place | None:
    """The place of a child element of the (complex) element at a place."""
    found = resolve(place, ctx)
    if found is None or not isinstance(found[0], Node):
        return None
    return Place(found[0], found[1], name, ())


# ------------------------------------------------------------------------------------------------ Hearth's data types


def _hd_system(parts: Rep, place: Place, ctx: Context, where: Where) -> None:
    """HD -> Identifier.system (systems.identifier_system; design note a1, defect 7)."""
    system = systems.identifier_system(text(parts, 1), text(parts, 2), text(parts, 3), ctx.identifier_systems)
    if system and not _SPACE.search(system):
        write(place, system, ctx, where)
    elif system:  # 'NIST MPI' is no URI: the authority is named as the identifier's assigner
        assigner = walk_one(Place(place.node, place.type, "assigner", ()), "display", ctx)
        if assigner is not None:
            write(assigner, system, ctx, where)


# PL components from the most general level to the most specific: (component, physical type code).
PL_LEVELS = ((4, "si"), (7, "bu"), (8, "lvl"), (1, None), (2, "ro"), (3, "bd"))


def _pl_location(parts: Rep, place: Place, ctx: Context, where: Where) -> None:
    """PL -> one Location per level (facility, building, floor, point of care, room, bed) chained by partOf; the
    element references the most specific one, with the present components joined by '/' as display."""
    if "Location" not in ctx.types:
        return
    parent: Built | None = None
    path: list[str] = []
    for comp, physical in PL_LEVELS:
        name = text(parts, comp)
        if not name:
            continue
        path.append(name)
        level = Built("Location", key="/".join(path))
        level.node.update(name=name, mode="instance")
        if physical:
            level.node["physicalType"] = Node(coding=Slots({(1,): Node(
                system="http://terminology.hl7.org/CodeSystem/location-physical-type", code=physical)}))
        if parent is not None:
            level.node["partOf"] = Node({HOP: parent})
        ctx.children.append(level)
        parent = level
    if parent is None:
        return
    if place.name != HOP:
        return
    place.node[HOP].dropped = True  # the empty child the hop made: the chain's end replaces it
    place.node[HOP] = parent
    place.node["display"] = "/".join(text(parts, c) for c in (1, 2, 3) if text(parts, c)) or parent.node["name"]


SPECIAL: dict[str, Callable[[Rep, Place, Context, Where], None]] = {
    "HD[uri]": _hd_system,
    "PL[Location]": _pl_location,
}
