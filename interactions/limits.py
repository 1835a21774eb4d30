"""The bounds on what one request may cost, as the interactions and the search parser apply them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hearth.search.limits import SearchLimits


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 16 * 1024 * 1024
    max_resource_elements: int = 100_000
    search_max_chain_depth: int = 4
    search_max_values: int = 200
    search_max_parameters: int = 100
    search_timeout: float = 10.0

    @property
    def search(self) -> SearchLimits:
        """The bounds the search parser applies to one query string."""
        return SearchLimits(self.search_max_chain_depth, self.search_max_values, self.search_max_parameters)

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(settings.max_body_bytes, settings.max_resource_elements, settings.search_max_chain_depth,
                   settings.search_max_values, settings.search_max_parameters, settings.search_timeout)
