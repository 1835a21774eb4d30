"""The R4 (4.0.1) resource types and the id rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

RESOURCE_TYPES: frozenset[str] = frozenset(
    json.loads((Path(__file__).parent / "data" / "resource_types.json").read_text(encoding="utf-8"))
)

NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})  # the R4 resources not DomainResources

ID_PATTERN = re.compile(r"[A-Za-z0-9\-\.]{1,64}")


def is_resource_type(name: str) -> bool:
    return name in RESOURCE_TYPES


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None
