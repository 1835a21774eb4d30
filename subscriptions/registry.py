"""The subscriptions this process knows, indexed by resource type and guard for fast matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from hearth.search.matcher import Prepared
from hearth.subscriptions.criteria import Filter
from hearth.subscriptions.model import Subscription


@dataclass(frozen=True, slots=True)
class Target:
    """What one subscription asks of one resource type: all `filters` hold (none: every resource)."""

    subscription: Subscription
    filters: tuple[Filter, ...]
    reads: bool = False  # some filter has chains or `_has`: matching reads the store (within a budget)


class _TypeIndex:
    """Targets of one resource type: by guard (kind, param) -> key -> targets, plus unguarded ones."""

    def __init__(self, targets: Iterable[Target]) -> None:
        self.guarded: dict[tuple[str, str], dict[object, list[Target]]] = {}
        self.unguarded: list[Target] = []
        self.needs_previous = False
        for target in targets:
            topic = target.subscription.topic
            self.needs_previous |= topic is not None and topic.needs_previous
            guard = next((f.guard for f in target.filters if f.guard is not None), None)
            if guard is None:
                self.unguarded.append(target)
                continue
            kind, param, keys = guard
            buckets = self.guarded.setdefault((kind, param), {})
            for key in keys:
                buckets.setdefault(key, []).append(target)

    def candidates(self, prepared: Prepared) -> list[Target]:
        found = {id(t): t for t in self.unguarded}
        for (kind, param), buckets in self.guarded.items():
            if kind == "token":
                keys: Iterable[object] = prepared.token_keys(param)
            else:
                keys = {getattr(entry, "target_id", None) for entry in prepared.get(param)}
            for key in keys:
                for target in buckets.get(key, ()):
                    found[id(target)] = target
        return list(found.values())


class Registry:
    def __init__(self) -> None:
        self._by_id: dict[str, Subscription] = {}
        self._since: dict[str, int] = {}  # change seq from which a subscription sees changes
        self._indexes: dict[str, _TypeIndex] = {}
        self._dirty: set[str] = set()

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, subscription_id: str) -> Subscription | None:
        return self._by_id.get(subscription_id)

    def since(self, subscription_id: str) -> int:
        return self._since.get(subscription_id, 0)

    def put(self, subscription: Subscription, since_seq: int | None = None) -> None:
        old = self._by_id.get(subscription.id)
        if old is not None:
            self._dirty.update(old.resource_types)
        self._by_id[subscription.id] = subscription
        if since_seq is not None:
            self._since[subscription.id] = since_seq
        self._dirty.update(subscription.resource_types)

    def remove(self, subscription_id: str) -> None:
        old = self._by_id.pop(subscription_id, None)
        self._since.pop(subscription_id, None)
        if old is not None:
            self._dirty.update(old.resource_types)

    def index(self, resource_type: str) -> _TypeIndex | None:
        """The index of `resource_type` (None: no subscription is about it), rebuilt after changes."""
        if self._dirty:
            for dirty in self._dirty:
                self._indexes.pop(dirty, None)
            targets: dict[str, list[Target]] = {}
            for subscription in self._by_id.values():
                if subscription.status == "off" or subscription.matching_stopped:
                    continue
                for type_ in subscription.resource_types:
                    if type_ in self._dirty:
                        filters = tuple(f for f in subscription.filters if f.resource_type == type_)
                        reads = any(f.matcher.needs_resolver for f in filters)
                        targets.setdefault(type_, []).append(Target(subscription, filters, reads))
            for type_, found in targets.items():
                self._indexes[type_] = _TypeIndex(found)
            self._dirty.clear()
        return self._indexes.get(resource_type)
