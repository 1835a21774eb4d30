"""The generated HL7 v2-to-FHIR maps (connectors/hl7v2/data/*.json): loaded once, conditions compiled to callables."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

DATA = Path(__file__).parent / "data"

# A field lookup: "PID-11.9" (segment field[.component[.sub]]), "XPN.12" (component of the value being mapped) or
# "ORC" (segment present) -> the values of its repetitions, empty when not valued.
Lookup = Callable[[str], list[str]]
Condition = Callable[[Lookup], bool]


def norm(name: str) -> str:
    """Normalise a vocabulary or map name as the tables cite it (generate.py keys the data so): lower case, only
    a-z 0-9 [ ] - ."""
    return re.sub(r"[^a-z0-9\[\]\-.]", "", name.lower())


def always(_lookup: Lookup) -> bool:
    """The condition of a rule without one."""
    return True


_CONDITIONS: dict[str, Condition] = {}  # one callable per distinct condition, so that its result can be reused


def compile_condition(node: dict | None) -> Condition:
    """A callable for a condition AST (see generate.py), the same one for equal ASTs; raises ValueError on an
    unknown operator."""
    if node is None:
        return always
    key = json.dumps(node, sort_keys=True)
    found = _CONDITIONS.get(key)
    if found is None:
        found = _CONDITIONS[key] = _compile(node)
    return found


def _compile(node: dict) -> Condition:
    (op, args), = node.items()
    if op in ("and", "or"):
        parts = [compile_condition(a) for a in args]
        return (lambda f: all(p(f) for p in parts)) if op == "and" else (lambda f: any(p(f) for p in parts))
    if op == "not":
        inner = compile_condition(args)
        return lambda f: not inner(f)
    if op == "valued":
        ref = args["ref"]
        return lambda f: any(v != "" for v in f(ref))
    subject = args[0]["ref"]
    value = args[1]
    first = _first(subject)
    if op in ("eq", "ne"):
        other: Callable[[Lookup], str] = _first(value["ref"]) if isinstance(value, dict) else (lambda f, v=value: v)
        return (lambda f: first(f) == other(f)) if op == "eq" else (lambda f: first(f) != other(f))
    if op in ("in", "not_in"):
        options = frozenset(value)
        return (lambda f: first(f) in options) if op == "in" else (lambda f: first(f) not in options)
    count = {"count_gt": int.__gt__, "count_lt": int.__lt__, "count_le": int.__le__, "count_eq": int.__eq__}.get(op)
    if count:
        return lambda f: count(len([v for v in f(subject) if v != ""]), value)
    if op == "len_gt":
        return lambda f: len(first(f)) > value
    raise ValueError(f"unknown condition operator {op!r}")


def _first(ref: str) -> Callable[[Lookup], str]:
    def get(lookup: Lookup) -> str:
        values = lookup(ref)
        return values[0] if values else ""
    return get


@dataclass(frozen=True)
class Step:
    """One step of a FHIR target path: element, slot (int, "each", (lo, hi) or None), optional hop to a resource."""

    element: str
    slot: Any = None
    hop: str | None = None
    hop_n: int | None = None

    @classmethod
    def of(cls, raw: list) -> "Step":
        """A step from its JSON list form."""
        slot = tuple(raw[1]) if len(raw) > 1 and isinstance(raw[1], list) else (raw[1] if len(raw) > 1 else None)
        return cls(raw[0], slot, raw[2] if len(raw) > 2 else None, raw[3] if len(raw) > 3 else None)


@dataclass(frozen=True)
class Rule:
    """One row of a segment or data type map."""

    field: int | None
    comp: int | None
    sub: int | None
    path: tuple[Step, ...]
    when: Condition
    fhir: str | None
    dt: str | None
    vocab: str | None
    assign: dict | None
    src: str
    condition: dict | None = None

    @classmethod
    def of(cls, raw: dict) -> "Rule":
        """A rule from its JSON form, its condition compiled."""
        return cls(raw.get("field"), raw.get("comp"), raw.get("sub"), tuple(Step.of(s) for s in raw["path"]),
                   compile_condition(raw.get("when")), raw.get("fhir"), raw.get("dt"), raw.get("vocab"),
                   raw.get("assign"), raw["src"], raw.get("when"))


@dataclass(frozen=True)
class FieldMap:
    """A segment map (resource set) or a data type map (resource None)."""

    name: str
    resource: str | None
    rules: tuple[Rule, ...]
    src: str

    def field(self, number: int) -> tuple[Rule, ...]:
        """The rules of one field (segment maps) or component (data type maps)."""
        return tuple(r for r in self.rules if (r.field if self.resource else r.comp) == number)


@dataclass(frozen=True)
class Instance:
    """A target instance of a message rule: Patient[1], Observation[2]…"""

    type: str
    n: int | str | None = None


@dataclass(frozen=True)
class Link:
    """A reference (or a constant) a message rule sets between instances."""

    source: Instance
    path: str
    target: Instance | None
    const: str | None


@dataclass(frozen=True)
class MessageRule:
    """One row of a message map: a segment position, a condition, a target instance and a segment map."""

    order: str
    path: tuple[str, ...]
    follow: str | None
    when: Condition
    target: Instance | None
    target_path: tuple[Step, ...]
    target_assign: dict | None
    map: str | None
    links: tuple[Link, ...]
    src: str

    @classmethod
    def of(cls, raw: dict) -> "MessageRule":
        """A message rule from its JSON form."""
        target = raw.get("target") or {}
        links = tuple(Link(Instance(x["from"]["type"], x["from"].get("n")), x["path"],
                           Instance(x["to"]["type"], x["to"].get("n")) if "to" in x else None, x.get("const"))
                      for x in raw.get("links", ()))
        return cls(raw["order"], tuple(raw["path"]), raw.get("follow"), compile_condition(raw.get("when")),
                   Instance(target["type"], target.get("n")) if target else None,
                   tuple(Step.of(s) for s in target.get("path", ())), target.get("assign"), raw.get("map"), links,
                   raw["src"])


@dataclass(frozen=True)
class Coding:
    """The FHIR coding a v2 code maps to (code None: listed by the IG without a FHIR code)."""

    code: str | None
    display: str | None
    system: str | None
    src: str


@dataclass(frozen=True)
class Vocabulary:
    """A vocabulary map: v2 code -> Coding."""

    name: str
    table: str | None
    codes: dict[str, Coding]

    def get(self, code: str) -> Coding | None:
        """The coding of a v2 code, None when the IG does not list it."""
        return self.codes.get(code.strip())


@dataclass(frozen=True)
class Event:
    """Routing of MSH-9.1^MSH-9.2: structure, structure tree and message map (None: a handler such as merge)."""

    structure: str
    tree: str
    map: str | None
    handler: str | None


class Maps:
    """Typed access to the generated data; conditions are compiled when a map is first asked for."""

    def __init__(self, data: Path = DATA):
        self._raw = {name: _load(data / f"{name}.json") for name in
                     ("events", "structures", "messages", "segments", "datatypes", "vocabulary", "tables")}
        self._cache: dict[tuple[str, str], Any] = {}

    def event(self, message_type: str, trigger: str) -> Event | None:
        """The route of a message type and trigger event, None when Hearth does not take it."""
        raw = self._raw["events"].get(f"{message_type}^{trigger}")
        return Event(raw["structure"], raw["tree"], raw["map"], raw.get("handler")) if raw else None

    def events(self) -> list[str]:
        """Every supported 'TYPE^EVENT'."""
        return sorted(self._raw["events"])

    def structure(self, name: str) -> list:
        """The structure tree of a message structure (JSON items, see generate.py)."""
        return self._raw["structures"][name]

    def message(self, name: str) -> tuple[MessageRule, ...]:
        """The rules of a message map, in table order."""
        return self._cached("messages", name, lambda raw: tuple(MessageRule.of(r) for r in raw))

    def segment(self, name: str) -> FieldMap:
        """A segment map such as 'PID[Patient]'."""
        return self._cached("segments", name, lambda raw: FieldMap(name, raw["resource"],
                                                                   tuple(Rule.of(r) for r in raw["rules"]), raw["src"]))

    def datatype(self, name: str) -> FieldMap:
        """A data type map such as 'CX[Identifier]'."""
        return self._cached("datatypes", name, lambda raw: FieldMap(name, None, tuple(Rule.of(r) for r in raw["rules"]),
                                                                    raw["src"]))

    def vocabulary(self, name: str) -> Vocabulary:
        """A vocabulary map by name, normalised ('Yes/NoIndicator' = 'yesnoindicator')."""
        found = self._cache.get(("vocabulary-as-named", name))
        if found is None:
            found = self._cache[("vocabulary-as-named", name)] = self._cached(
                "vocabulary", norm(name), lambda raw: Vocabulary(raw["name"], raw.get("table"), {
                    code: Coding(c["code"], c.get("display"), c.get("system"), c["src"])
                    for code, c in raw["codes"].items()}))
        return found

    def table(self, name: str) -> str | None:
        """The v2 table of a vocabulary ('DischargeDisposition' -> 'HL70112'), from the Code System inventory."""
        entry = self._raw["tables"].get(norm(name))
        return entry.get("table") if entry else None

    def names(self, kind: str) -> list[str]:
        """The names of one kind of map: messages, segments, datatypes or vocabulary."""
        return sorted(self._raw[kind])

    def _cached(self, kind: str, name: str, build: Callable[[Any], Any]) -> Any:
        key = (kind, name)
        if key not in self._cache:
            self._cache[key] = build(self._raw[kind][name])
        return self._cache[key]


def _load(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@lru_cache(maxsize=1)
def maps() -> Maps:
    """The shipped maps, loaded once."""
    return Maps()
