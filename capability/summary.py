"""`_summary` and `_elements`: the subset of a resource a client asked for, tagged SUBSETTED."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from hearth.capability.outcome import invalid

SUMMARY_MODES = ("true", "text", "data", "count", "false")
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
              "display": "subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


@lru_cache(maxsize=1)
def _elements() -> dict[str, dict[str, list[str]]]:
    return json.loads((Path(__file__).parent / "data" / "summary_elements.json").read_text(encoding="utf-8"))


def _matches(key: str, names: Sequence[str]) -> bool:
    """Whether JSON key `key` (or `_key`) is one of the element `names` (`value[x]` matches `valueQuantity`)."""
    key = key.removeprefix("_")
    for name in names:
        if name.endswith("[x]"):
            stem = name[:-3]
            if key.startswith(stem) and key[len(stem):len(stem) + 1].isupper():
                return True
        elif key == name:
            return True
    return False


def check_summary(value: str | None) -> None:
    if value is not None and value not in SUMMARY_MODES:
        raise invalid(f"Invalid _summary '{value}': expected one of {', '.join(SUMMARY_MODES)}", ("_summary",))


def subset(resource: dict[str, Any], summary: str | None, elements: Sequence[str] = ()) -> dict[str, Any]:
    """`resource` reduced per `_summary` (true | text | data | false) or `_elements`; unchanged if neither."""
    if summary in (None, "false", "count") and not elements:
        return resource
    table = _elements().get(resource.get("resourceType", ""), {"summary": [], "mandatory": []})
    out = {key: value for key, value in resource.items()
           if key in _ALWAYS or _kept(key, table, summary, elements)}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    out["meta"] = meta
    return out


def _kept(key: str, table: dict[str, list[str]], summary: str | None, elements: Sequence[str]) -> bool:
    if summary == "true":
        return _matches(key, table["summary"])
    if summary == "text":
        return key == "text" or _matches(key, table["mandatory"])
    if summary == "data":
        return key != "text"
    return _matches(key, elements) or _matches(key, table["mandatory"])


def parse_elements(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if value else ()
