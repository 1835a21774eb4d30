"""The bounds one search's query string must keep: past one, the search is refused (400 `too-costly`) naming
the setting, under strict and lenient handling alike (a limit is not an unknown parameter)."""

from __future__ import annotations

from dataclasses import dataclass

from hearth.capability.outcome import FhirError


@dataclass(frozen=True)
class SearchLimits:
    max_chain_depth: int = 4  # chain levels and nested `_has` levels in one parameter, counted together
    max_values: int = 200  # comma-separated values in one parameter (ORed values, `_sort` keys, `_elements`, …)
    max_parameters: int = 100  # parameters in one search, repeats included


def timed_out(timeout: float) -> FhirError:
    """The refusal of a search its backend stopped at the deadline."""
    return too_costly("search_timeout", timeout, "The search's running time", " s")


def too_costly(setting: str, limit: int | float, what: str, unit: str = "") -> FhirError:
    """The refusal of a search past one of its bounds, naming the setting (`search_timeout`: HEARTH_SEARCH_TIMEOUT)."""
    shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
    return FhirError(400, "too-costly", f"{what} exceeds HEARTH_{setting.upper()} ({shown}{unit})")
