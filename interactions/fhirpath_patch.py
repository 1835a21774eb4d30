"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): a Parameters resource of add / insert / delete /
replace / move operations, applied to a resource dict.

Paths are a FHIRPath subset evaluated against the R4 element model: names (choice elements by their base
name: `Observation.value`), indexers `[n]`, `first()`, `last()`, and `where(<cond>)` with `<cond>` a
conjunction (`and`) of `<relative path> = <literal>` or `!=` (literals: 'string', numbers, true/false).
Anything else (other functions, `or`, `|`, `as`/`ofType`, `%variables`, arithmetic) is refused with 400
naming the unsupported part. Malformed patches are 400; a well-formed patch that cannot be applied to this
resource (a path matching nothing or several elements, an index out of range) is 422. A patch may have no
operations (it then changes nothing). A delete that leaves its parent empty removes the parent too, and so on up
to the resource: FHIR has no empty objects or arrays.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable

from capability.outcome import FhirError, invalid
from interactions.elements import Element, choices, elements
from interactions.patch_budget import Budget, Patcher

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>!=|=|\.|\(|\)|\[|\])"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`))")
_OPERATIONS = ("add", "insert", "delete", "replace", "move")


@dataclass(slots=True)
class Node:
    """An element found by a path: `holder[key]` (or `holder[key][index]` in a list), of FHIR type `type`."""

    holder: dict[str, Any] | None
    key: str | None
    index: int | None
    type: str
    value: Any
    element: Element | None = None  # the definition of `key` in its parent (None for the resource itself)
    parent: Node | None = None  # the element holding this one (None for the resource itself)

    def remove(self) -> None:
        """Delete the element, and its parents as they are left empty (up to, not including, the resource)."""
        if self.holder is None or self.key is None:
            raise invalid("FHIRPath Patch cannot delete the resource itself")
        self._detach()
        parent = self.parent
        if parent is not None and parent.holder is not None and not parent.value:
            parent.remove()

    def _detach(self) -> None:
        if self.index is None:
            del self.holder[self.key]
            self.holder.pop("_" + self.key, None)
            return
        del self.holder[self.key][self.index]
        extensions = self.holder.get("_" + self.key)
        if isinstance(extensions, list) and self.index < len(extensions):
            del extensions[self.index]
        if not self.holder[self.key]:
            del self.holder[self.key]
            self.holder.pop("_" + self.key, None)


def unprocessable(diagnostics: str, expression: str) -> FhirError:
    return FhirError(422, "processing", diagnostics, (expression,))


# --- paths --------------------------------------------------------------------------------------------------

def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise invalid(f"Unsupported FHIRPath in patch path '{text}' at '{text[position:]}'")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


Step = Callable[[list[Node]], list[Node]]


class _PathParser:
    """Compiles a path into steps over Nodes (typed, so added/replaced values land in the right shape)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def _peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _take(self, value: str | None = None) -> tuple[str, str]:
        token = self._peek()
        if token is None or (value is not None and token[1] != value):
            raise invalid(f"Unsupported FHIRPath in patch path '{self.text}': expected {value or 'more'}")
        self.at += 1
        return token

    def parse(self, resource_type: str) -> list[Step]:
        steps: list[Step] = []
        first = self._peek()
        if first is not None and first == ("name", resource_type):
            self.at += 1
        else:
            steps.append(self._segment())
        while self._peek() is not None:
            token = self._peek()
            if token == ("op", "["):
                steps.append(self._indexer())
                continue
            self._take(".")
            steps.append(self._segment())
        return steps

    def _indexer(self) -> Step:
        self._take("[")
        kind, number = self._take()
        if kind != "num" or not number.isdigit():
            raise invalid(f"Unsupported index in patch path '{self.text}'")
        self._take("]")
        index = int(number)
        return lambda nodes: nodes[index:index + 1]

    def _segment(self) -> Step:
        kind, name = self._take()
        if kind != "name":
            raise invalid(f"Unsupported FHIRPath in patch path '{self.text}' near '{name}'")
        if self._peek() == ("op", "("):
            return self._function(name)
        name = name.strip("`")
        return lambda nodes: [child for node in nodes for child in children(node, name)]

    def _function(self, name: str) -> Step:
        self._take("(")
        if name == "first":
            self._take(")")
            return lambda nodes: nodes[:1]
        if name == "last":
            self._take(")")
            return lambda nodes: nodes[-1:]
        if name != "where":
            raise invalid(f"Unsupported FHIRPath function {name}() in patch path '{self.text}'")
        tests = [self._comparison()]
        while self._peek() == ("name", "and"):
            self.at += 1
            tests.append(self._comparison())
        self._take(")")
        return lambda nodes: [node for node in nodes if all(test(node.value) for test in tests)]

    def _comparison(self) -> Callable[[Any], bool]:
        names = [self._take()[1]]
        while self._peek() == ("op", "."):
            self.at += 1
            names.append(self._take()[1])
        if not all(name.replace("_", "a").isalnum() for name in names):
            raise invalid(f"Unsupported condition in patch path '{self.text}'")
        _, operator = self._take()
        if operator not in ("=", "!="):
            raise invalid(f"Unsupported operator '{operator}' in patch path '{self.text}'")
        literal = _literal(self._take(), self.text)
        equal = operator == "="
        return lambda value: (_values(value, names) == [literal]) == equal


def _literal(token: tuple[str, str], text: str) -> Any:
    kind, raw = token
    if kind == "str":
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    if kind == "num":
        return Decimal(raw) if "." in raw else int(raw)
    if raw in ("true", "false"):
        return raw == "true"
    raise invalid(f"Unsupported literal '{raw}' in patch path '{text}'")


def _values(value: Any, names: list[str]) -> list[Any]:
    """Plain (untyped) navigation for `where` conditions, flattening lists."""
    current = [value]
    for name in names:
        following = []
        for item in current:
            if isinstance(item, dict) and name in item:
                child = item[name]
                following.extend(child if isinstance(child, list) else [child])
        current = following
    return current


def children(node: Node, name: str) -> list[Node]:
    """The child elements `name` of `node` (a choice element by its base name gives its one present variant)."""
    if not isinstance(node.value, dict):
        return []
    props = elements(node.type)
    if name in props:
        keys = [(name, props[name])]
    else:
        keys = choices(node.type, name)
        if not keys:
            raise invalid(f"{node.type} has no element '{name}'")
    found = []
    for key, element in keys:
        value = node.value.get(key)
        if isinstance(value, list):
            found.extend(Node(node.value, key, i, _concrete(element.type, item), item, element, node)
                         for i, item in enumerate(value))
        elif value is not None:
            found.append(Node(node.value, key, None, _concrete(element.type, value), value, element, node))
    return found


def _concrete(type_name: str, value: Any) -> str:
    if type_name == "Resource" and isinstance(value, dict):
        return value.get("resourceType", "Resource")
    return type_name


def compile_path(text: str, resource_type: str) -> Callable[[dict[str, Any]], list[Node]]:
    """`Patient.name.where(use='official').given[0]` -> a function from a resource to the Nodes it selects."""
    steps = _PathParser(text).parse(resource_type)

    def evaluate(resource: dict[str, Any]) -> list[Node]:
        nodes = [Node(None, None, None, resource_type, resource)]
        for step in steps:
            nodes = step(nodes)
        return nodes
    return evaluate


# --- operations -----------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Value:
    """An operation's `value`: the JSON value and, for value[x], its type suffix (e.g. "String")."""

    json: Any
    suffix: str | None


def _part_value(part: dict[str, Any]) -> _Value:
    for key, value in part.items():
        if key.startswith("value") and len(key) > 5:
            return _Value(value, key[5:])
    if "resource" in part:
        return _Value(part["resource"], None)
    if "part" in part:  # an anonymous (backbone) type, spelled out as named parts
        built: dict[str, Any] = {}
        for sub in part["part"]:
            item = _part_value(sub).json
            name = sub.get("name")
            if name in built:
                built[name] = (built[name] if isinstance(built[name], list) else [built[name]]) + [item]
            else:
                built[name] = item
        return _Value(built, None)
    raise invalid(f"The patch value '{part.get('name')}' has no value[x], resource or parts")


def _key_for(type_name: str, name: str, value: _Value) -> tuple[str, Element]:
    """The JSON name and element `name` (maybe a choice) takes for `value` in `type_name`."""
    props = elements(type_name)
    if name in props:
        return name, props[name]
    for key, element in choices(type_name, name):
        if value.suffix is not None and key == name + value.suffix:
            return key, element
    raise invalid(f"{type_name} has no element '{name}'" + (f" of type {value.suffix}" if value.suffix else ""))


def _one(nodes: list[Node], path: str, operation: str) -> Node:
    if len(nodes) != 1:
        found = "nothing" if not nodes else f"{len(nodes)} elements"
        raise unprocessable(f"FHIRPath Patch {operation}: the path '{path}' matches {found}; it must match one", path)
    return nodes[0]


def _list_of(resource: dict[str, Any], resource_type: str, path: str, operation: str) -> list[Any]:
    """The list a path names (for insert and move): its parent must exist; the list may be empty."""
    parent_path, dot, name = path.rpartition(".")
    if not dot or not name.isidentifier():
        raise invalid(f"FHIRPath Patch {operation} needs a path ending in a repeating element, not '{path}'")
    parent = _one(compile_path(parent_path, resource_type)(resource), parent_path, operation)
    element = elements(parent.type).get(name)
    if element is None or not element.many:
        raise invalid(f"'{path}' is not a repeating element of {parent.type}")
    return parent.value.setdefault(name, [])


def _index(part: dict[str, Any] | None, name: str) -> int:
    value = part.get("valueInteger") if part else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid(f"FHIRPath Patch '{name}' must be a non-negative integer")
    return value


def _shape(value: Any, element: Element) -> Any:
    return value if not element.many or isinstance(value, list) else [value]


def _check_operation(parts: dict[str, dict[str, Any]]) -> None:
    """The operation's own shape (400), before it meets a resource."""
    kind = parts.get("type", {}).get("valueCode")
    if kind not in _OPERATIONS:
        raise invalid(f"FHIRPath Patch operation type must be one of {', '.join(_OPERATIONS)}, not '{kind}'")
    path = parts.get("path", {}).get("valueString")
    if not isinstance(path, str) or not path:
        raise invalid(f"FHIRPath Patch {kind} needs a path")
    if kind in ("add", "insert", "replace"):
        if "value" not in parts:
            raise invalid(f"FHIRPath Patch {kind} needs a value")
        _part_value(parts["value"])
    if kind == "add" and not isinstance(parts.get("name", {}).get("valueString"), str):
        raise invalid("FHIRPath Patch add needs a name")
    for name in {"insert": ("index",), "move": ("source", "destination")}.get(kind, ()):
        _index(parts.get(name), name)


def _apply_one(resource: dict[str, Any], resource_type: str, parts: dict[str, dict[str, Any]], budget: Budget,
               label: str) -> None:
    kind, path = parts["type"]["valueCode"], parts["path"]["valueString"]
    value = _part_value(parts["value"]) if "value" in parts else None
    if value is not None:  # a copy lands in the resource: the patch stays as it was, to be applied again
        value = _Value(copy.deepcopy(value.json), value.suffix)
    if kind == "add":
        name = parts["name"]["valueString"]
        node = _one(compile_path(path, resource_type)(resource), path, kind)
        if not isinstance(node.value, dict):
            raise unprocessable(f"FHIRPath Patch add: '{path}' is a primitive value; nothing can be added to it", path)
        key, element = _key_for(node.type, name, value)
        if not element.many and key in node.value:
            raise unprocessable(f"FHIRPath Patch add: '{path}.{name}' already exists (use replace)", path)
        budget.change(label, path, value.json if key in node.value else _shape(value.json, element))
        if element.many:
            node.value.setdefault(key, []).extend(_shape(value.json, element))
        else:
            node.value[key] = value.json
    elif kind == "insert":
        items = _list_of(resource, resource_type, path, kind)
        index = _index(parts.get("index"), "index")
        if index > len(items):
            raise unprocessable(f"FHIRPath Patch insert: index {index} is past the end of '{path}' "
                                f"({len(items)} items)", path)
        budget.change(label, path, value.json)
        items.insert(index, value.json)
    elif kind == "delete":
        nodes = compile_path(path, resource_type)(resource)
        if nodes:  # deleting what is not there is not an error (R4)
            node = _one(nodes, path, kind)
            budget.change(label, path, removed=node.value)
            node.remove()
    elif kind == "replace":
        node = _one(compile_path(path, resource_type)(resource), path, kind)
        budget.change(label, path, value.json, node.value)
        _replace(node, value)
    else:
        items = _list_of(resource, resource_type, path, kind)
        source, destination = _index(parts.get("source"), "source"), _index(parts.get("destination"), "destination")
        if source >= len(items) or destination >= len(items):
            raise unprocessable(f"FHIRPath Patch move: source {source} or destination {destination} is outside "
                                f"'{path}' ({len(items)} items)", path)
        items.insert(destination, items.pop(source))  # the size stays as it is


def _replace(node: Node, value: _Value) -> None:
    if node.holder is None or node.key is None or node.element is None:
        raise invalid("FHIRPath Patch cannot replace the resource itself")
    if node.index is not None:
        node.holder[node.key][node.index] = value.json
        return
    choice = node.element.choice
    if choice and value.suffix and node.key != choice + value.suffix:  # valueString -> valueQuantity
        del node.holder[node.key]
        node.holder.pop("_" + node.key, None)
        node.holder[choice + value.suffix] = value.json
    else:
        node.holder[node.key] = value.json


def compile_fhirpath_patch(parameters: dict[str, Any]) -> Patcher:
    """Check a FHIRPath Patch Parameters resource; return the Patcher applying it to a resource (in place)."""
    operations = []
    for number, parameter in enumerate(parameters.get("parameter") or []):
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise invalid(f"FHIRPath Patch parameter {number} must be named 'operation'",
                          (f"Parameters.parameter[{number}]",))
        parts = {part.get("name"): part for part in parameter.get("part") or [] if isinstance(part, dict)}
        try:
            _check_operation(parts)
        except FhirError as error:
            raise invalid(f"FHIRPath Patch operation {number}: {error.diagnostics}",
                          (f"Parameters.parameter[{number}]",)) from None
        operations.append(parts)

    def apply(resource: dict[str, Any], budget: Budget) -> dict[str, Any]:
        for number, parts in enumerate(operations):
            label = f"FHIRPath Patch operation {number} ({parts['type']['valueCode']} {parts['path']['valueString']})"
            _apply_one(resource, resource["resourceType"], parts, budget, label)
        return resource
    return Patcher(apply, changes=bool(operations))
