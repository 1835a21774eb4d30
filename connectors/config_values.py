"""Checks of the values a connectors file gives (durations, numbers, flags, choices), one style of error for
every kind of connector: the message names the connector and the key."""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """The connectors file says something that cannot be run; the message names the connector and the key."""


def seconds(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' is a duration such as \"30s\", \"5m\" or \"1h\"")
    if isinstance(value, (int, float)):
        return float(value)
    match = _DURATION.match(str(value).strip())
    if match is None:
        raise ConfigError(f"{where}: '{key}' is a duration such as \"30s\", \"5m\" or \"1h\"")
    return float(match.group(1)) * _UNIT[match.group(2)]


def positive(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where}: '{key}' must be a positive number")
    return float(value)


def whole(where: str, key: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{where}: '{key}' must be a whole number of at least {least}")
    return value


def flag(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' is true or false")
    return value


def choice(where: str, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: '{key}' is one of {', '.join(choices)}")
    return value
