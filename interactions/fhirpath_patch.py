"""FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): a Parameters resource of add / insert / delete /
replace / move operations, applied to a resource dict.

Paths are located by the FHIRPath core (capability/fhirpath.py `locator`), typed by the R4 element model: names
(choice elements by their base name: `Observation.value`), indexers `[n]`, `first()`, `last()`, and `where(...)`
with any criterion the core compiles (`use = 'official' and period.exists()`, `$this != 'x'`, ...). Anything else
(other functions, `|`, `as`/`ofType`, `%variables`, arithmetic) and a name the element model does not know are
refused with 400 naming the part. Malformed patches are 400; a well-formed patch that cannot be applied to this
resource (a path matching nothing or several elements, an index out of range) is 422. A patch may have no
operations (it then changes nothing). A delete that leaves its parent empty removes the parent too, and so on up
to the resource: FHIR has no empty objects or arrays.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from hearth.capability.elements import Element, element_model
from hearth.capability.fhirpath import FhirPathError, Node, locator
from hearth.capability.outcome import FhirError, invalid
from hearth.interactions.patch_budget import Budget, Patcher

_OPERATIONS = ("add", "insert", "delete", "replace", "move")


def unprocessable(diagnostics: str, expression: str) -> FhirError:
    return FhirError(422, "processing", diagnostics, (expression,))


# --- paths --------------------------------------------------------------------------------------------------

def select(path: str, resource: dict[str, Any]) -> list[Node]:
    """The elements `path` locates in `resource`; 400 when the path is unsupported or names no element."""
    try:
        return locator(path, resource["resourceType"])(resource)
    except FhirPathError as exc:
        raise invalid(f"FHIRPath Patch path '{path}': {exc}", (path,)) from None


def _remove(node: Node) -> None:
    """Delete the element, and its parents as they are left empty (up to, not including, the resource)."""
    if node.holder is None or node.key is None:
        raise invalid("FHIRPath Patch cannot delete the resource itself")
    holder, key = node.holder, node.key
    if node.index is None:
        del holder[key]
        holder.pop("_" + key, None)
    else:
        del holder[key][node.index]
        extensions = holder.get("_" + key)
        if isinstance(extensions, list) and node.index < len(extensions):
            del extensions[node.index]
        if not holder[key]:
            del holder[key]
            holder.pop("_" + key, None)
    parent = node.parent
    if parent is not None and parent.holder is not None and not parent.value:
        _remove(parent)


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
    for key, element in element_model().children(type_name, name):
        if key == name or value.suffix is not None and key == name + value.suffix:
            return key, element
    raise invalid(f"{type_name} has no element '{name}'" + (f" of type {value.suffix}" if value.suffix else ""))


def _one(nodes: list[Node], path: str, operation: str) -> Node:
    if len(nodes) != 1:
        found = "nothing" if not nodes else f"{len(nodes)} elements"
        raise unprocessable(f"FHIRPath Patch {operation}: the path '{path}' matches {found}; it must match one", path)
    return nodes[0]


def _list_of(resource: dict[str, Any], path: str, operation: str) -> list[Any]:
    """The list a path names (for insert and move): its parent must exist; the list may be empty."""
    parent_path, dot, name = path.rpartition(".")
    if not dot or not name.isidentifier():
        raise invalid(f"FHIRPath Patch {operation} needs a path ending in a repeating element, not '{path}'")
    parent = _one(select(parent_path, resource), parent_path, operation)
    element = element_model().elements(parent.type).get(name)
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


def _apply_one(resource: dict[str, Any], parts: dict[str, dict[str, Any]], budget: Budget, label: str) -> None:
    kind, path = parts["type"]["valueCode"], parts["path"]["valueString"]
    value = _part_value(parts["value"]) if "value" in parts else None
    if value is not None:  # a copy lands in the resource: the patch stays as it was, to be applied again
        value = _Value(copy.deepcopy(value.json), value.suffix)
    if kind == "add":
        name = parts["name"]["valueString"]
        node = _one(select(path, resource), path, kind)
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
        items = _list_of(resource, path, kind)
        index = _index(parts.get("index"), "index")
        if index > len(items):
            raise unprocessable(f"FHIRPath Patch insert: index {index} is past the end of '{path}' "
                                f"({len(items)} items)", path)
        budget.change(label, path, value.json)
        items.insert(index, value.json)
    elif kind == "delete":
        nodes = select(path, resource)
        if nodes:  # deleting what is not there is not an error (R4)
            node = _one(nodes, path, kind)
            budget.change(label, path, removed=node.value)
            _remove(node)
    elif kind == "replace":
        node = _one(select(path, resource), path, kind)
        budget.change(label, path, value.json, node.value)
        _replace(node, value)
    else:
        items = _list_of(resource, path, kind)
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
            _apply_one(resource, parts, budget, label)
        return resource
    return Patcher(apply, changes=bool(operations))
