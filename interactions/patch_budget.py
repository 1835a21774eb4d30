"""What a compiled patch is, and the bound it applies within.

A patch keeps a running size of the resource it changes, in JSON values (HEARTH_MAX_RESOURCE_ELEMENTS) and in
bytes (HEARTH_MAX_BODY_BYTES), from the size of what each operation adds and takes away. An operation that would
grow the resource past a limit, or make the patch add more than the limit in all, is refused before it runs,
so a refused patch costs in proportion to the limits, never to what its operations would have built
(21 JSON Patch `copy /name -> /name/-` double the resource 21 times).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from hearth.capability.outcome import FhirError
from hearth.interactions.limits import Limits

NOTHING: Any = object()  # no value: an operation that adds nothing, or takes nothing away
_UNBOUNDED = 1 << 62


def measure(value: Any, element_cap: int = _UNBOUNDED, byte_cap: int = _UNBOUNDED) -> tuple[int, int]:
    """The JSON values (objects, arrays, primitives) in `value` and its compact JSON size in bytes (string
    escapes aside). The walk stops as soon as a figure passes its cap: it then only says "more than the cap"."""
    elements = size = 0
    stack = [value]
    while stack and elements <= element_cap and size <= byte_cap:
        item = stack.pop()
        elements += 1
        if isinstance(item, dict):
            size += 1 + sum(len(key) + 4 for key in item)  # braces, and per member "key": and a comma
            stack.extend(item.values())
        elif isinstance(item, list):
            size += 1 + len(item)
            stack.extend(item)
        elif isinstance(item, str):
            size += 2 + (len(item) if item.isascii() else len(item.encode()))
        elif item is None or isinstance(item, bool):
            size += 5
        else:
            size += len(str(item))
    return elements, size


@dataclass(slots=True)
class Budget:
    """The running size of one resource under a patch, and what the patch has added so far."""

    limits: Limits
    label: str  # the resource, as Type/id
    elements: int
    bytes: int
    added_elements: int = 0
    added_bytes: int = 0

    @classmethod
    def of(cls, resource: dict[str, Any], limits: Limits, label: str) -> Budget:
        return cls(limits, label, *measure(resource))

    def change(self, operation: str, path: str, added: Any = NOTHING, removed: Any = NOTHING) -> None:
        """Account for `operation` (at `path`), about to put `added` into the resource and take `removed` out:
        422 naming the setting when that would pass a limit (the resource is then left as it is)."""
        limits = self.limits
        added_elements = added_bytes = removed_elements = removed_bytes = 0
        if added is not NOTHING:  # measured no further than the room left: past it, the answer is no
            added_elements, added_bytes = measure(added, limits.max_resource_elements - self.added_elements,
                                                  limits.max_body_bytes - self.added_bytes)
        if removed is not NOTHING:
            removed_elements, removed_bytes = measure(removed)
        self._check(operation, path, self.elements, added_elements, removed_elements, self.added_elements,
                    limits.max_resource_elements, "HEARTH_MAX_RESOURCE_ELEMENTS", "JSON values")
        self._check(operation, path, self.bytes, added_bytes, removed_bytes, self.added_bytes,
                    limits.max_body_bytes, "HEARTH_MAX_BODY_BYTES", "bytes")
        self.elements += added_elements - removed_elements
        self.bytes += added_bytes - removed_bytes
        self.added_elements += added_elements
        self.added_bytes += added_bytes

    def _check(self, operation: str, path: str, size: int, added: int, removed: int, added_before: int,
               limit: int, setting: str, unit: str) -> None:
        if added > removed and size + added - removed > limit:
            raise _too_costly(f"{operation} would make {self.label} larger than {setting} ({limit} {unit})", path)
        if added_before + added > limit:
            raise _too_costly(f"{operation} would make the patch add more than {setting} ({limit} {unit}) "
                              "in all", path)


def _too_costly(diagnostics: str, path: str) -> FhirError:
    return FhirError(422, "too-costly", f"{diagnostics}; nothing was written", (path,))


@dataclass(frozen=True, slots=True)
class Patcher:
    """A patch, checked: `apply` changes a resource dict in place (and returns it) within a Budget."""

    apply: Callable[[dict[str, Any], Budget], dict[str, Any]]
    changes: bool = True  # False: no operation can change the resource (none at all, or JSON Patch tests only)
    copies: bool = False  # JSON Patch copies: what applying it costs is bounded by the limits, not its size
    size: int = 0  # the patch document, in bytes
