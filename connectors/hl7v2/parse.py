"""A decoded HL7 v2 message as plain data (design note b6): the `hl7` package splits it, every leaf is unescaped
once with Hearth's own unescape (charset-aware `\\X..\\`), and the segments are grouped by the message structure
tree so that each occurrence of a repeating group is a scope. Z-segments and segments the tree does not know are
kept aside (`Message.extras`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import hl7

from hearth.connectors.hl7v2.escape import Delimiters, unescape
from hearth.connectors.hl7v2.frame import read_delimiters

# A repetition: its components, each a list of subcomponents (always this depth, whatever the separators gave).
Rep = list[list[str]]


class ParseError(ValueError):
    """Text that is no HL7 v2 message."""


@dataclass
class Segment:
    """One segment occurrence: fields[n] is field n (MSH: MSH-n), a list of repetitions."""

    name: str
    fields: list[list[Rep]]
    text: str  # as received (still escaped), for z_segments = "keep"
    number: int  # the n-th segment of this name in the message (1-based), for error locations
    valued: dict[int, list[Rep]] = field(default_factory=dict)  # reps() computed once per field
    memo: dict[str, list[str]] = field(default_factory=dict)  # condition lookups over the whole segment, once
    holds: dict[Callable, bool] = field(default_factory=dict)  # segment map conditions over it, decided once
    _filled: tuple[int, ...] | None = None

    def reps(self, n: int) -> list[Rep]:
        """The repetitions of field n that hold anything."""
        found = self.valued.get(n)
        if found is None:
            reps = self.fields[n] if n < len(self.fields) else []
            found = self.valued[n] = [r for r in reps if any(s for c in r for s in c)]
        return found

    def filled(self) -> tuple[int, ...]:
        """The numbers of the fields that hold anything."""
        if self._filled is None:
            self._filled = tuple(n for n in range(1, len(self.fields)) if self.reps(n))
        return self._filled

    def value(self, n: int, c: int = 1, s: int = 1) -> str:
        """Field n, component c, subcomponent s of the first repetition ('' when absent)."""
        reps = self.fields[n] if n < len(self.fields) else []
        return leaf(reps[0], c, s) if reps else ""


def leaf(rep: Rep, c: int = 1, s: int = 1) -> str:
    """Component c, subcomponent s of a repetition ('' when absent)."""
    if c > len(rep):
        return ""
    comp = rep[c - 1]
    return comp[s - 1] if s <= len(comp) else ""


@dataclass
class Scope:
    """One occurrence of a group (the message itself is the root scope)."""

    name: str
    parent: "Scope | None"
    segments: list[Segment] = field(default_factory=list)
    children: list["Scope"] = field(default_factory=list)
    repeating: bool = False

    def path(self) -> tuple[str, ...]:
        """Group names from the root (exclusive) to this scope."""
        names: list[str] = []
        scope: Scope | None = self
        while scope is not None and scope.parent is not None:
            names.append(scope.name)
            scope = scope.parent
        return tuple(reversed(names))


@dataclass
class Message:
    """A parsed message: segments in order, the grouped tree, and what the tree did not place."""

    delimiters: Delimiters
    segments: list[Segment]
    root: Scope
    placed: list[tuple[Segment, Scope]]  # each known segment with the scope it belongs to, in message order
    extras: list[Segment]  # Z-segments and segments the structure does not know

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]


def parse(text: str, charset: str, tree: list | None = None) -> Message:
    """The message in `text` ("\\r" separators, MSH first), leaves unescaped with `charset`; grouped by `tree`
    (a structure from maps().structure(), or None for a flat message)."""
    first = text.split("\r", 1)[0]
    delimiters = read_delimiters(first) if first.startswith("MSH") else None
    if delimiters is None:
        raise ParseError("MSH-1/MSH-2 (field separator and encoding characters) cannot be read")
    split = split_fields(text, delimiters, charset)
    if split is None:
        split = split_fields_hl7(text, delimiters, charset)
    raw_texts = [s for s in text.split("\r") if s]
    counts: dict[str, int] = {}
    segments = []
    for (name, fields), raw_text in zip(split, raw_texts):
        counts[name] = counts.get(name, 0) + 1
        segments.append(Segment(name, fields, raw_text, counts[name]))
    root = Scope("", None)
    placed, extras = _group(segments, tree or [], root)
    return Message(delimiters, segments, root, placed, extras)


def split_fields(text: str, delimiters: Delimiters, charset: str) -> list[tuple[str, list[list[Rep]]]] | None:
    """Each segment's name and fields, split exactly as the `hl7` package splits them (it strips the message, takes
    the separators from MSH-2 with its own defaults, and never lets escapes protect a separator), but with plain
    str.split: the `hl7` package builds a container object per part, which is most of a message's parse time.
    None for what only `hl7` reads right (separators that coincide, another header segment inside)."""
    message = text.strip()
    if not message.startswith("MSH") or len(message) < 4:
        return None
    end, first_end = message.find(message[3], 4), message.find("\r")
    if end < 0 or 0 <= first_end < end:
        return None
    seps = message[3:end]
    field, rep, comp, sub = seps[0], seps[2:3] or "~", seps[1:2] or "^", seps[4:5] or "&"
    if len({field, rep, comp, sub, "\r"}) != 5:
        return None
    esc = delimiters.escape or rep  # (no escape character: test the repetition separator twice)
    out: list[tuple[str, list[list[Rep]]]] = []
    for i, segment in enumerate(message.split("\r")):
        if segment[:3] in _HEADERS:
            if i:
                return None
            fields: list[list[Rep]] = [[[["MSH"]]], [[[field]]], [[[seps[1:]]]]]
            rest = segment[end + 1:]
            pieces = rest.split(field) if rest else []
            name = "MSH"
        else:
            pieces = segment.split(field)
            name = pieces[0]
            fields = [[[[name]]]]
            del pieces[0]
        for piece in pieces:
            if not (rep in piece or comp in piece or sub in piece or esc in piece):
                fields.append([[["" if piece == '""' else piece]]])  # the usual field: one plain value
                continue
            fields.append([[[_leaf(s, delimiters, charset) for s in c.split(sub)] for c in r.split(comp)]
                           for r in piece.split(rep)])
        out.append((name, fields))
    return out


_HEADERS = ("MSH", "BHS", "FHS")  # segments the `hl7` package reads MSH-1 and MSH-2 of


def split_fields_hl7(text: str, delimiters: Delimiters, charset: str) -> list[tuple[str, list[list[Rep]]]]:
    """Each segment's name and fields as the `hl7` package splits them (the reference for split_fields)."""
    try:
        parsed = hl7.parse(text)
    except (hl7.ParseException, IndexError, ValueError) as error:
        raise ParseError(f"the message cannot be split into segments: {error}") from error
    return [(str(raw[0]), _fields(raw, str(raw[0]), delimiters, charset)) for raw in parsed]


def _fields(segment: hl7.Segment, name: str, delimiters: Delimiters, charset: str) -> list[list[Rep]]:
    fields: list[list[Rep]] = [[[[name]]]]
    for n, raw in enumerate(segment[1:], start=1):
        if name == "MSH" and n <= 2:  # the separators themselves: never split or unescaped
            fields.append([[[str(raw)]]])
            continue
        fields.append([_rep(r, delimiters, charset) for r in raw])
    return fields


def _rep(raw, delimiters: Delimiters, charset: str) -> Rep:
    if isinstance(raw, str):
        return [[_leaf(raw, delimiters, charset)]]
    return [[_leaf(raw_comp, delimiters, charset)] if isinstance(raw_comp, str)
            else [_leaf(str(sub), delimiters, charset) for sub in raw_comp] for raw_comp in raw]


def _leaf(raw: str, delimiters: Delimiters, charset: str) -> str:
    """A leaf unescaped; the HL7 null '""' reads as empty (Hearth does not delete on it here)."""
    return "" if raw == '""' else unescape(raw, delimiters, charset)


# ------------------------------------------------------------------------------------------------ grouping


# Structure trees are static (maps() holds them), so what they can hold is worked out once per list or item; the
# cache keeps the object itself so that its id() cannot be reused by another.
_NAMES: dict[int, tuple[list, frozenset[str]]] = {}
_STARTS: dict[int, tuple[dict, frozenset[str]]] = {}


def _names(items: list) -> frozenset[str]:
    """Every segment name a list of structure items can hold."""
    cached = _NAMES.get(id(items))
    if cached is None or cached[0] is not items:
        found: set[str] = set()
        for item in items:
            found |= {item["seg"]} if "seg" in item else _names(item["items"])
        cached = _NAMES[id(items)] = items, frozenset(found)
    return cached[1]


def _starts(item: dict) -> frozenset[str]:
    """The segment names that can open an item (a group opens with its leading optional items or first required)."""
    cached = _STARTS.get(id(item))
    if cached is None or cached[0] is not item:
        found: set[str] = set()
        if "seg" in item:
            found.add(item["seg"])
        else:
            for child in item["items"]:
                found |= _starts(child)
                if child.get("min", 0) > 0:
                    break
        cached = _STARTS[id(item)] = item, frozenset(found)
    return cached[1]


class _Cursor:
    """Greedy placement (HAPI style): look ahead in the current group, else climb; a repeating group restarts when
    one of its opening segments comes again."""

    def __init__(self, tree: list, root: Scope):
        self.stack: list[tuple[list, int, Scope]] = [(tree, 0, root)]  # (items, position, scope)

    def place(self, name: str) -> Scope | None:
        for depth in range(len(self.stack) - 1, -1, -1):
            items, pos, scope = self.stack[depth]
            found = self._find(items, pos, name, scope, depth)
            if found is not None:
                return found
        return None

    def _find(self, items: list, pos: int, name: str, scope: Scope, depth: int) -> Scope | None:
        for i in range(pos, len(items)):
            item = items[i]
            if "seg" in item and item["seg"] == name:
                if i == 0 and scope.repeating and scope.segments:
                    return None  # the group's first segment again: a new occurrence of the group (HAPI's rule)
                del self.stack[depth + 1:]
                # a repeating segment stays current (position i), a single one moves on
                self.stack[depth] = (items, i if item.get("max", 1) != 1 else i + 1, scope)
                return scope
            if "group" in item and name in _starts(item):
                del self.stack[depth + 1:]
                self.stack[depth] = (items, i if item.get("max", 1) != 1 else i + 1, scope)
                child = Scope(item["group"], scope, repeating=item.get("max", 1) != 1)
                scope.children.append(child)
                self.stack.append((item["items"], 0, child))
                return self._find(item["items"], 0, name, child, depth + 1)
        return None


def _group(segments: list[Segment], tree: list, root: Scope) -> tuple[list[tuple[Segment, Scope]], list[Segment]]:
    known = _names(tree)
    cursor = _Cursor(tree, root)
    placed: list[tuple[Segment, Scope]] = []
    extras: list[Segment] = []
    for segment in segments:
        scope = cursor.place(segment.name) if segment.name in known else None
        if scope is None:
            extras.append(segment)
            continue
        scope.segments.append(segment)
        placed.append((segment, scope))
    return placed, extras
