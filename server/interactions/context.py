"""What every interaction needs: the store, the search registry, the server's base URL and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from storage.base import Store

if TYPE_CHECKING:
    from capability.search_parameters import SearchRegistry


@dataclass
class Context:
    store: Store
    base_url: str
    default_count: int = 20
    max_count: int = 1000
    extras: dict = field(default_factory=dict)

    @cached_property
    def registry(self) -> "SearchRegistry":
        from capability.search_parameters import default_registry
        return default_registry()
