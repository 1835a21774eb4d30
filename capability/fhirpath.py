"""FHIRPath over the R4 element model (capability/elements.py): the one tokenizer, parser and typed navigation.

An expression is parsed into a syntax tree (tuples, see `_Parser`) and run in one of two ways, both typed by the
element model, so choice elements resolve to their JSON names (`Observation.value` -> `valueQuantity`, ...):

- `compile_path` compiles it, once, into typed `Branch`es over JSON values: each a function from a collection of
  nodes to a collection of values, plus the FHIR type of those values (one branch per type: `Observation.effective`
  gives one per `effective[x]` type), so a caller picks a converter per branch up front. Search extraction runs
  them on every resource it indexes (search/extract.py). Supported: paths, `|`, `as` / `is` / `ofType` / `as()` /
  `is()`, indexers, `where(...)`, `resolve() is T` inside `where` (given how to name a Reference's target),
  `extension('url')`, `first()`, `last()`, `exists()`, `empty()`, `not()`, `=` / `!=` with literals, `and` / `or`,
  `%resource`, `$this`.
- `locator` evaluates the navigational part of a path (names, indexers, `first()`, `last()`, `where(...)` with any
  criterion `compile_path` supports) into located `Node`s: where each element sits in the resource and its type,
  so it can be changed (FHIRPath Patch, interactions/fhirpath_patch.py). Elements of type Resource (contained,
  Bundle.entry.resource) are typed by their `resourceType` as they are met.

Anything else raises `FhirPathError` naming the construct.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hearth.capability.elements import Element, ElementModel, element_model
from hearth.capability.resource_types import NOT_DOMAIN_RESOURCES, is_resource_type

Nodes = list[Any]
Step = Callable[[Nodes, dict], Nodes]

# FHIR type names that are specialisations of another, for `as` / `is` / `ofType`.
_SUPERTYPES = {
    "Age": "Quantity", "Count": "Quantity", "Distance": "Quantity", "Duration": "Quantity",
    "SimpleQuantity": "Quantity", "MoneyQuantity": "Quantity",
    "code": "string", "id": "string", "markdown": "string",
    "url": "uri", "canonical": "uri", "oid": "uri", "uuid": "uri",
    "positiveInt": "integer", "unsignedInt": "integer",
}
_REF_TARGET = "@target"  # pseudo-type of `resolve()`: the target type named by a Reference
# Fixed bounds on an expression (R4's longest has 325 tokens, its deepest 2 levels of parentheses): the parser and
# the compilers recurse per level, and must stay well inside the interpreter's recursion limit.
MAX_TOKENS = 600
MAX_NESTING = 32


class FhirPathError(ValueError):
    """The expression is outside the supported subset, or does not fit the element model."""


@dataclass(frozen=True, slots=True)
class Branch:
    """Steps from the input collection to values of one FHIR type. A `str` step reads a property.

    `path` names the element the values come from (`Patient.gender`, `Patient.contact.gender`) when they
    are one element's values, for looking up its binding. `many`: a repeating element is on the way, so one
    input node can give several values."""

    type: str
    steps: tuple[str | Step, ...] = ()
    path: str | None = None
    many: bool = False

    def then(self, step: str | Step) -> Branch:
        """Filter or slice the same element's values."""
        return Branch(self.type, self.steps + (step,), self.path, self.many)

    def into(self, step: str | Step, type_name: str, path: str | None = None, repeats: bool = False) -> Branch:
        """Go on to values of another type (a child element, `repeats` if it can occur more than once, or
        what `resolve()` names)."""
        return Branch(type_name, self.steps + (step,), path, self.many or repeats)


# --- tokens and syntax tree ----------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<env>%[A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>`[^`]+`|\$?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>!=|!~|<=|>=|[.()\[\],|=~<>-])
)""", re.VERBOSE)


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = depth = 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise FhirPathError(f"unexpected character {text[pos]!r} at {pos}")
        if len(tokens) == MAX_TOKENS:
            raise FhirPathError(f"expression longer than {MAX_TOKENS} tokens")
        pos = match.end()
        kind = match.lastgroup
        value: Any = match.group(kind)
        if value in ("(", ")") and kind == "op":
            depth += 1 if value == "(" else -1
            if depth > MAX_NESTING:
                raise FhirPathError(f"parentheses nested more than {MAX_NESTING} deep")
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "num":
            value = int(value) if value.isdigit() else Decimal(value)
        elif kind == "ident" and value.startswith("`"):
            value = value[1:-1]
        tokens.append((kind, value))
    return tokens


class _Parser:
    """Recursive descent over the FHIRPath precedence levels we support, producing the syntax tree: tuples
    ("member", base or None, name), ("call", base or None, name, args), ("index", base, n), ("literal", value,
    type), ("env", "%name"), ("union" | "=" | "!=" | "and" | "or", left, right), ("is" | "as", base, type name)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, Any] | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def accept(self, kind: str, value: Any = None) -> bool:
        token = self.peek()
        if token is not None and token[0] == kind and (value is None or token[1] == value):
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, value: Any = None) -> Any:
        token = self.peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise FhirPathError(f"expected {value or kind}, found {token[1] if token else 'end'!r}")
        self.pos += 1
        return token[1]

    def parse(self) -> tuple:
        tree = self.or_expr()
        if self.peek() is not None:
            raise FhirPathError(f"unexpected {self.peek()[1]!r}")
        return tree

    def keyword(self, *words: str) -> str | None:
        token = self.peek()
        if token is not None and token[0] == "ident" and token[1] in words:
            self.pos += 1
            return token[1]
        return None

    def or_expr(self) -> tuple:
        left = self.and_expr()
        while (word := self.keyword("or", "xor", "implies")) is not None:
            if word != "or":
                raise FhirPathError(f"operator {word!r} is not supported")
            left = ("or", left, self.and_expr())
        return left

    def and_expr(self) -> tuple:
        left = self.equality()
        while self.keyword("and"):
            left = ("and", left, self.equality())
        return left

    def equality(self) -> tuple:
        left = self.union()
        token = self.peek()
        if token is not None and token[0] == "op" and token[1] in ("=", "!=", "~", "!~", "<", ">", "<=", ">="):
            if token[1] not in ("=", "!="):
                raise FhirPathError(f"operator {token[1]!r} is not supported")
            self.pos += 1
            return (token[1], left, self.union())
        if self.keyword("in", "contains"):
            raise FhirPathError("operators 'in' / 'contains' are not supported")
        return left

    def union(self) -> tuple:
        left = self.type_expr()
        while self.accept("op", "|"):
            left = ("union", left, self.type_expr())
        return left

    def type_expr(self) -> tuple:
        left = self.postfix()
        while (word := self.keyword("is", "as")) is not None:
            left = (word, left, self.type_name())
        return left

    def type_name(self) -> str:
        name = self.expect("ident")
        while self.accept("op", "."):  # FHIR.Quantity, System.String
            name = self.expect("ident")
        return name

    def postfix(self) -> tuple:
        tree = self.term()
        while True:
            if self.accept("op", "."):
                name = self.expect("ident")
                tree = self.invocation(tree, name)
            elif self.accept("op", "["):
                index = self.expect("num")
                self.expect("op", "]")
                if not isinstance(index, int):
                    raise FhirPathError("an indexer needs an integer")
                tree = ("index", tree, index)
            else:
                return tree

    def invocation(self, base: tuple | None, name: str) -> tuple:
        if not self.accept("op", "("):
            return ("member", base, name)
        args: list = []
        if not self.accept("op", ")"):
            if name in ("as", "is", "ofType"):
                args.append(self.type_name())
            else:
                args.append(self.or_expr())
            while self.accept("op", ","):
                args.append(self.or_expr())
            self.expect("op", ")")
        return ("call", base, name, tuple(args))

    def term(self) -> tuple:
        token = self.peek()
        if token is None:
            raise FhirPathError("unexpected end of expression")
        kind, value = token
        self.pos += 1
        if kind == "op" and value == "(":
            tree = self.or_expr()
            self.expect("op", ")")
            return tree
        if kind == "str":
            return ("literal", value, "string")
        if kind == "op" and value == "-":  # a negative number (polarity of other terms is not supported)
            value = -self.expect("num")
            kind = "num"
        if kind == "num":
            return ("literal", value, "integer" if isinstance(value, int) else "decimal")
        if kind == "env":
            return ("env", value)
        if kind == "ident":
            if value in ("true", "false"):
                return ("literal", value == "true", "boolean")
            return self.invocation(None, value)
        raise FhirPathError(f"unexpected {value!r}")


# --- compiler ------------------------------------------------------------------------------------

def _walk(keys: tuple[str, ...]) -> Step:
    """Read `keys` in turn from every dict in the collection, flattening arrays."""

    def walk(nodes: Nodes, root: dict) -> Nodes:
        for key in keys:
            found: Nodes = []
            for node in nodes:
                if type(node) is dict:
                    value = node.get(key)
                    if value is None:
                        continue
                    if type(value) is list:
                        found.extend(value)
                    else:
                        found.append(value)
            if not found:
                return found
            nodes = found
        return nodes

    return walk


def run_branch(branch: Branch) -> Step:
    """One function for a branch's steps, consecutive property reads fused into one walk."""
    fused: list[Step] = []
    keys: list[str] = []
    for step in branch.steps + (None,):
        if isinstance(step, str):
            keys.append(step)
            continue
        if keys:
            fused.append(_walk(tuple(keys)))
            keys = []
        if step is not None:
            fused.append(step)
    if not fused:
        return lambda nodes, root: nodes
    if len(fused) == 1:
        return fused[0]

    def chain(nodes: Nodes, root: dict) -> Nodes:
        for step in fused:
            nodes = step(nodes, root)
            if not nodes:
                break
        return nodes

    return chain


def _run_all(branches: list[Branch]) -> Step:
    runs = [run_branch(branch) for branch in branches]
    if not runs:
        return _nothing
    if len(runs) == 1:
        return runs[0]
    return lambda nodes, root: [value for run in runs for value in run(nodes, root)]


def _nothing(nodes: Nodes, root: dict) -> Nodes:
    return []


_SLICES: dict[str, Step] = {"first": lambda nodes, root: nodes[:1], "last": lambda nodes, root: nodes[-1:]}


def _nth(index: int) -> Step:
    return lambda nodes, root: nodes[index:index + 1]


def _same(a: Any, b: Any) -> bool:
    """FHIRPath `=` on single values: booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


ReferenceTarget = Callable[[dict], str | None]
"""The resource type a Reference (a dict) names, or None: what `resolve() is T` tests, the reference not followed."""


class _Compiler:
    """Syntax tree -> typed Branches over JSON values, for one resource type."""

    def __init__(self, model: ElementModel, resource_type: str, reference_target: ReferenceTarget | None) -> None:
        self.model = model
        self.resource_type = resource_type
        self.reference_target = reference_target

    def type_name(self, name: str) -> str:
        if self.model.is_type(name):
            return name
        lowered = name[:1].lower() + name[1:]  # System types: DateTime -> dateTime, String -> string
        if lowered in self.model.primitives:
            return lowered
        raise FhirPathError(f"unknown type {name!r}")

    def is_a(self, type_name: str, wanted: str) -> bool:
        while type_name != wanted:
            if type_name not in _SUPERTYPES:
                return wanted in ("Resource", "DomainResource") and type_name == self.resource_type
            type_name = _SUPERTYPES[type_name]
        return True

    def names_resource(self, name: str) -> bool:
        """`name` at the start of a path denotes the resource itself (Patient, Resource, DomainResource)."""
        if name == self.resource_type or name == "Resource":
            return True
        return name == "DomainResource" and self.resource_type not in NOT_DOMAIN_RESOURCES

    def compile(self, tree: tuple, focus: list[Branch]) -> list[Branch]:
        kind = tree[0]
        if kind == "member":
            _, base, name = tree
            if base is None:
                if name == "$this":
                    return focus
                if focus and focus[0].type == self.resource_type and not focus[0].steps:
                    if self.names_resource(name):
                        return focus
                    if is_resource_type(name):
                        return []  # another resource type's path in a multi-base expression
                return self.member(focus, name)
            return self.member(self.compile(base, focus), name)
        if kind == "env":
            if tree[1] in ("%resource", "%rootResource"):
                return [Branch(self.resource_type, (lambda nodes, root: [root],))]
            raise FhirPathError(f"variable {tree[1]} is not supported")
        if kind == "literal":
            value = tree[1]
            return [Branch(tree[2], (lambda nodes, root: [value],))]
        if kind == "union":
            return self.compile(tree[1], focus) + self.compile(tree[2], focus)
        if kind == "index":
            return self.collection_step(self.compile(tree[1], focus), _nth(tree[2]), "an indexer")
        if kind in ("as", "is"):
            return self.type_op(kind, self.compile(tree[1], focus), tree[2])
        if kind == "call":
            _, base, name, args = tree
            return self.call(self.compile(base, focus) if base is not None else focus, name, args)
        if kind in ("=", "!=", "and", "or"):
            return [self.boolean(kind, self.compile(tree[1], focus), self.compile(tree[2], focus))]
        raise FhirPathError(f"unsupported expression {kind!r}")

    def member(self, focus: list[Branch], name: str) -> list[Branch]:
        out = []
        for branch in focus:
            if branch.type == _REF_TARGET:
                raise FhirPathError("navigating into resolve() is not supported")
            for prop, element in self.model.children(branch.type, name):
                out.append(branch.into(prop, element.type, f"{branch.type}.{name}" if prop == name else None,
                                       element.many))
        if focus and not out:
            raise FhirPathError(f"no element {name!r} on {'/'.join(sorted({b.type for b in focus}))}")
        return out

    def collection_step(self, focus: list[Branch], step: Step, what: str) -> list[Branch]:
        if len(focus) > 1:  # the step needs the whole collection, which we keep split by type
            raise FhirPathError(f"{what} over several element types is not supported")
        return [branch.then(step) for branch in focus]

    def type_op(self, op: str, focus: list[Branch], name: str) -> list[Branch]:
        wanted = self.type_name(name)
        targets = [b for b in focus if b.type == _REF_TARGET]
        if op == "as":
            if targets:
                raise FhirPathError("resolve() as T is not supported; use resolve() is T")
            kept = [b for b in focus if self.is_a(b.type, wanted)]
            if focus and not kept:
                raise FhirPathError(f"no element of type {name} here")
            return kept
        if targets and len(targets) != len(focus):
            raise FhirPathError("resolve() mixed with other elements is not supported")
        run = _run_all(focus)
        if targets:  # `resolve() is Patient`: the reference names a Patient
            def test(nodes: Nodes, root: dict) -> Nodes:
                found = run(nodes, root)
                return [wanted in found] if found else []
        else:
            matching = [b for b in focus if self.is_a(b.type, wanted)]
            run_matching = _run_all(matching)

            def test(nodes: Nodes, root: dict) -> Nodes:
                return [bool(run_matching(nodes, root))] if run(nodes, root) else []
        return [Branch("boolean", (test,))]

    def call(self, focus: list[Branch], name: str, args: tuple) -> list[Branch]:
        if name in ("as", "ofType", "is"):
            if len(args) != 1:
                raise FhirPathError(f"{name}() takes one type")
            return self.type_op("is" if name == "is" else "as", focus, args[0])
        if name == "where":
            if len(args) != 1:
                raise FhirPathError("where() takes one criterion")
            return [branch.then(self.where(branch, args[0])) for branch in focus]
        if name == "extension":
            if len(args) != 1 or args[0][0] != "literal" or args[0][2] != "string":
                raise FhirPathError("extension() takes one string literal")
            url = args[0][1]
            found = self.member(focus, "extension")
            return [b.then(lambda nodes, root: [n for n in nodes if type(n) is dict and n.get("url") == url])
                    for b in found]
        if name == "resolve" and not args and self.reference_target is not None:
            if any(b.type != "Reference" for b in focus):
                raise FhirPathError("resolve() applies to References only")
            target = self.reference_target

            def targets(nodes: Nodes, root: dict) -> Nodes:
                return [t for node in nodes if type(node) is dict and (t := target(node)) is not None]

            return [b.into(targets, _REF_TARGET) for b in focus]
        if name in _SLICES and not args:
            return self.collection_step(focus, _SLICES[name], f"{name}()")
        if name in ("exists", "empty") and len(args) <= 1:
            if args:
                focus = [branch.then(self.where(branch, args[0])) for branch in focus]
            run = _run_all(focus)
            want = name == "exists"
            return [Branch("boolean", (lambda nodes, root: [bool(run(nodes, root)) == want],))]
        if name == "not" and not args:
            run = _run_all(focus)
            return [Branch("boolean", (lambda nodes, root: [not v[0]] if len(v := run(nodes, root)) == 1
                                       and isinstance(v[0], bool) else [],))]
        raise FhirPathError(f"function {name}() is not supported")

    def where(self, branch: Branch, criterion: tuple) -> Step:
        test = _run_all(self.compile(criterion, [Branch(branch.type)]))
        return lambda nodes, root: [node for node in nodes if test([node], root) == [True]]

    def boolean(self, op: str, left: list[Branch], right: list[Branch]) -> Branch:
        run_left = _run_all(left)
        run_right = _run_all(right)
        if op in ("=", "!="):
            negate = op == "!="

            def equal(nodes: Nodes, root: dict) -> Nodes:
                a, b = run_left(nodes, root), run_right(nodes, root)
                if not a or not b:
                    return []
                same = len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
                return [same != negate]

            return Branch("boolean", (equal,))
        decisive = op == "or"  # the value that settles `or` (True) or `and` (False) on its own

        def logic(nodes: Nodes, root: dict) -> Nodes:
            a, b = run_left(nodes, root), run_right(nodes, root)
            if a == [decisive] or b == [decisive]:
                return [decisive]
            if a == [not decisive] and b == [not decisive]:
                return [not decisive]
            return []

        return Branch("boolean", (logic,))


def compile_path(expression: str, model: ElementModel, resource_type: str, context: Branch | None = None,
                 reference_target: ReferenceTarget | None = None) -> list[Branch]:
    """The typed branches `expression` selects on a `resource_type` resource (or, for composite
    components, relative to `context`). `resolve()` is supported with `reference_target` only.
    Raises FhirPathError when unsupported or selecting nothing."""
    if not model.is_type(resource_type):
        raise FhirPathError(f"unknown resource type {resource_type!r}")
    tree = _Parser(expression).parse()
    compiler = _Compiler(model, resource_type, reference_target)
    focus = [Branch(context.type) if context is not None else Branch(resource_type)]
    branches = compiler.compile(tree, focus)
    if not branches:
        raise FhirPathError(f"{expression!r} selects nothing on {resource_type}")
    return branches


# --- locating elements -------------------------------------------------------------------------------

@dataclass(slots=True)
class Node:
    """An element a path located: `holder[key]` (or `holder[key][index]` in an array), of FHIR type `type`."""

    holder: dict[str, Any] | None  # None for the resource itself
    key: str | None
    index: int | None
    type: str  # a resource's own type where the element is of type Resource
    value: Any
    element: Element | None = None  # the definition of `key` in its holder's type (None for the resource itself)
    parent: Node | None = None  # the element holding this one (None for the resource itself)


Locate = Callable[[list[Node], dict], list[Node]]
Types = frozenset[str] | None  # the types a step's nodes may have; None: only known as they are met (Resource)


class _Locator:
    """Syntax tree -> steps over Nodes, typed by the model. Errors that the types already show (an unknown
    element, an unsupported criterion) are raised when compiling; below a Resource, when the nodes are met."""

    def __init__(self, model: ElementModel, resource_type: str) -> None:
        self.model = model
        self.resource_type = resource_type
        self.compiler = _Compiler(model, resource_type, None)

    def compile(self, tree: tuple, types: Types) -> tuple[list[Locate], Types]:
        """The steps of `tree` from nodes of `types`, and the types of the nodes they give."""
        kind, base = tree[0], tree[1]
        if kind == "member" and base is None and types == {self.resource_type} \
                and self.compiler.names_resource(tree[2]):
            return [], types  # `Patient.name`: the path starts at the resource
        if kind not in ("member", "call", "index"):
            raise FhirPathError(f"{_DESCRIBED.get(kind, kind)} does not name elements")
        steps, types = self.compile(base, types) if base is not None else ([], types)
        if kind == "member":
            step, types = self.member(tree[2], types)
        elif kind == "index":
            step = _nth(tree[2])
        else:
            step = self.call(tree[2], tree[3], types)
        return steps + [step], types

    def call(self, name: str, args: tuple, types: Types) -> Locate:
        if name == "where":
            if len(args) != 1:
                raise FhirPathError("where() takes one criterion")
            return self.where(args[0], types)
        if name not in _SLICES:
            raise FhirPathError(f"function {name}() is not supported")
        if args:
            raise FhirPathError(f"{name}() takes no arguments")
        return _SLICES[name]

    def member(self, name: str, types: Types) -> tuple[Locate, Types]:
        children = self.model.children
        if types is not None:
            found = [element.type for t in types for _, element in children(t, name)]
            if not found:
                raise FhirPathError(f"no element {name!r} on {'/'.join(sorted(types))}")
            types = None if "Resource" in found else frozenset(found)
        dynamic = types is None

        def step(nodes: list[Node], root: dict) -> list[Node]:
            out: list[Node] = []
            known = False
            for node in nodes:
                if type(node.value) is not dict:
                    continue
                found = children(node.type, name)
                known = known or bool(found)
                for key, element in found:
                    value = node.value.get(key)
                    if type(value) is list:
                        out.extend(Node(node.value, key, i, _concrete(element.type, item), item, element, node)
                                   for i, item in enumerate(value))
                    elif value is not None:
                        out.append(Node(node.value, key, None, _concrete(element.type, value), value, element, node))
            if dynamic and not known and any(type(node.value) is dict for node in nodes):
                raise FhirPathError(f"no element {name!r} on {'/'.join(sorted({node.type for node in nodes}))}")
            return out

        return step, types

    def where(self, criterion: tuple, types: Types) -> Locate:
        tests: dict[str, Step] = {}

        def test(type_name: str) -> Step:
            found = tests.get(type_name)
            if found is None:
                found = tests[type_name] = _run_all(self.compiler.compile(criterion, [Branch(type_name)]))
            return found

        for type_name in types or ():
            test(type_name)
        return lambda nodes, root: [node for node in nodes if test(node.type)([node.value], root) == [True]]


_DESCRIBED = {"literal": "a literal", "env": "a %variable", "union": "'|'", "is": "'is'", "as": "'as'",
              "=": "'='", "!=": "'!='", "and": "'and'", "or": "'or'"}


def _concrete(type_name: str, value: Any) -> str:
    """An element's type, a contained (or entry) resource's by its resourceType."""
    if type_name == "Resource" and type(value) is dict:
        found = value.get("resourceType")
        return found if type(found) is str else type_name
    return type_name


def locator(path: str, resource_type: str) -> Callable[[dict[str, Any]], list[Node]]:
    """`Patient.name.where(use='official').given[0]` -> a function from a `resource_type` resource to the Nodes it
    selects. Raises FhirPathError when the path is unsupported or does not fit the model (also when applied, for
    elements below a Resource)."""
    model = element_model()
    if not model.is_type(resource_type):
        raise FhirPathError(f"unknown resource type {resource_type!r}")
    steps, _ = _Locator(model, resource_type).compile(_Parser(path).parse(), frozenset((resource_type,)))

    def evaluate(resource: dict[str, Any]) -> list[Node]:
        nodes = [Node(None, None, None, resource_type, resource)]
        for step in steps:
            nodes = step(nodes, resource)
        return nodes

    return evaluate
