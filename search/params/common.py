"""What every parameter type's module (search/params/) shares: the two kinds of parse error, what parsing may
ask of the parser, value splitting and escapes, the converter signature of extraction."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Callable, Protocol, Sequence

Converter = Callable[[Any, str, "str | None", list], None]
"""(one value, parameter code, server base URL, output list): appends that value's index entries."""

STRINGISH = ("string", "markdown", "code", "id", "uri", "url", "canonical", "uuid", "oid")  # FHIR types of text


class Unsupported(Exception):
    """The parameter (or modifier, or feature) is unknown or not supported: strict 400, lenient ignore."""


class BadValue(Exception):
    """A known parameter with a value it cannot mean: always 400."""


class Terminology(Protocol):
    """What the token modifiers need (capability/terminology.py)."""

    def expand(self, valueset_url: str) -> frozenset[tuple[str | None, str]] | None: ...
    def descendants(self, system: str, code: str) -> frozenset[str]: ...
    def ancestors(self, system: str, code: str) -> frozenset[str]: ...


class ParseContext(Protocol):
    """What a value's parsing may need from the search being parsed (search/parse.py)."""

    terminology: Terminology | None
    base_url: str
    registry: Any  # search/registry.py SearchRegistry
    limits: Any  # search/limits.py SearchLimits
    now: datetime  # the moment `ap` dates are relative to (UTC, naive)


PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_ESCAPED = re.compile(r"\\([\\,|$])")


def split(text: str, separator: str) -> list[str]:
    """`text` split on `separator` where it is not escaped with a backslash; escapes are kept."""
    if "\\" not in text:
        return text.split(separator)
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == separator:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text) if "\\" in text else text


def prefixed(text: str) -> tuple[str, str]:
    """(prefix, rest) of a number, date or quantity value; "eq" when it has none."""
    if text[:2] in PREFIXES and len(text) > 2:
        return text[:2], text[2:]
    return "eq", text


Term = tuple[str, str, Any]  # (entry field, operator, operand): `entry.<field> <operator> operand`
_FIELDS = frozenset({"lo", "hi", "value", "system", "code", "unit"})
_OPERATORS = frozenset({"<", "<=", ">", ">=", "=="})


def compiled(*conditions: Sequence[Sequence[Term]]) -> Callable[[Any], bool]:
    """An in-memory test of one entry: every condition holds, each an OR of ANDs of terms. Compiled into one
    lambda, as fast as one written out (subscriptions match every write): the fields and operators come from fixed
    sets, the operands are bound as names, never written into its source."""
    operands: dict[str, Any] = {}
    ors = []
    for condition in conditions:
        ands = []
        for alternative in condition:
            terms = []
            for field, op, operand in alternative:
                if field not in _FIELDS or op not in _OPERATORS:
                    raise ValueError(f"no test of {field} {op}")
                name = f"x{len(operands)}"
                operands[name] = operand
                terms.append(f"e.{field} {op} {name}")
            ands.append("(" + (" and ".join(terms) or "True") + ")")
        ors.append("(" + (" or ".join(ands) or "False") + ")")
    return eval("lambda e: " + " and ".join(ors), operands)  # noqa: S307 (see above)
