"""How the subscription service runs: where endpoints may point, delivery, matching budget, polling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

from hearth.subscriptions.delivery import DeliveryConfig
from hearth.subscriptions.egress import EgressPolicy, ResolverFactory


@dataclass(frozen=True)
class SubscriptionConfig:
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # where rest-hook endpoints may point
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    match_timeout: float = 1.0  # seconds one subscription may spend matching one change
    resolver: ResolverFactory = aiohttp.DefaultResolver  # how endpoint names are resolved (tests inject theirs)
    poll: float = 0.02  # seconds at least between two looks at the change log (passes gather what came meanwhile)
    # seconds at most between two looks when no commit of this process woke the dispatcher: what other processes
    # write to the same database (`hearth import`, another server on MongoDB) is seen within this time
    idle_poll: float = 1.0

    @classmethod
    def from_settings(cls, settings: Any) -> SubscriptionConfig:
        delivery = DeliveryConfig(retry_horizon=float(settings.subscription_retry_horizon) * 3600,
                                  retry_base=float(settings.subscription_retry_base))
        return cls(EgressPolicy.from_settings(settings), delivery, float(settings.subscription_match_timeout))
