"""A Subscription resource read once into what matching and delivery need (R4 or backport profile)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from hearth.capability.outcome import FhirError
from hearth.interactions.context import Context
from hearth.interactions.request import Caller
from hearth.security.grant import OWNER_EXTENSION as OWNER, Grant
from hearth.subscriptions.channels import Channel, parse_channel
from hearth.subscriptions.criteria import Filter, compile_criteria
from hearth.subscriptions.egress import EgressPolicy
from hearth.subscriptions.topics import TOPICS, Topic

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_PROFILE = f"{BACKPORT}/backport-subscription"
FILTER_CRITERIA = f"{BACKPORT}/backport-filter-criteria"
HEARTBEAT_PERIOD = f"{BACKPORT}/backport-heartbeat-period"
TIMEOUT = f"{BACKPORT}/backport-timeout"
MAX_COUNT = f"{BACKPORT}/backport-max-count"
PAYLOAD_CONTENT = f"{BACKPORT}/backport-payload-content"

STATUSES = ("requested", "active", "error", "off")
# How `Subscription.error` starts when Hearth stopped matching a subscription (its criteria failed or overran
# HEARTH_SUBSCRIPTION_MATCH_TIMEOUT): it stays out of matching, also after a restart, until a client writes it
# again (a create or update clears `error`).
MATCHING_STOPPED = "Matching stopped: "


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    version_id: int
    status: str
    backport: bool
    topic: Topic | None  # backport only
    filters: tuple[Filter, ...]  # R4: the criteria; backport: the filter criteria (AND within a type)
    channel: Channel
    heartbeat: int | None  # seconds (backport)
    timeout: float  # seconds per delivery attempt
    max_count: int  # events per notification (backport)
    end: datetime | None = None  # no events for changes after this instant
    matching_stopped: bool = False  # see MATCHING_STOPPED
    owner: Grant | None = None  # the grant of the client that wrote it; None: Hearth's own or an open server's

    @property
    def caller(self) -> Caller:
        """Who the subscription's own reads (matching, notifications, `$events`) are made as."""
        return Caller("subscription", self.id, self.owner)

    def expired(self, moment: datetime) -> bool:
        return self.end is not None and moment > self.end

    @property
    def resource_types(self) -> tuple[str, ...]:
        if self.topic is not None and self.topic.resource_types:
            return self.topic.resource_types
        return tuple(dict.fromkeys(f.resource_type for f in self.filters))

    @property
    def topic_url(self) -> str | None:
        return self.topic.url if self.topic else None


def _extension(element: dict | None, url: str) -> list[Any]:
    """The values of `element`'s extensions with this url."""
    values = []
    for extension in (element or {}).get("extension") or ():
        if extension.get("url") == url:
            values.extend(value for key, value in extension.items() if key.startswith("value"))
    return values


def is_backport(resource: dict[str, Any]) -> bool:
    profiles = (resource.get("meta") or {}).get("profile") or ()
    return any(p.split("|")[0] == BACKPORT_PROFILE for p in profiles) or resource.get("criteria") in TOPICS


def parse_subscription(ctx: Context, resource: dict[str, Any], version_id: int, egress: EgressPolicy) -> Subscription:
    """Read and check a Subscription; a 422 OperationOutcome naming the element that is wrong."""
    status = resource.get("status")
    if status not in STATUSES:
        raise FhirError(422, "invalid", f"Subscription.status must be one of {', '.join(STATUSES)}",
                        ("Subscription.status",))
    criteria = resource.get("criteria")
    if not isinstance(criteria, str) or not criteria:
        raise FhirError(422, "required", "Subscription.criteria is required", ("Subscription.criteria",))
    backport = is_backport(resource)
    raw_channel = resource.get("channel") or {}
    if backport:
        topic = TOPICS.get(criteria.split("|")[0])
        if topic is None:
            known = ", ".join(TOPICS)
            raise FhirError(422, "not-supported", f"Unknown SubscriptionTopic '{criteria}'; Hearth has: {known}",
                            ("Subscription.criteria",))
        filters = tuple(compile_criteria(ctx, text, "Subscription.criteria.extension")
                        for text in _extension(resource.get("_criteria"), FILTER_CRITERIA))
        _check_topic_filters(topic, filters)
        content = next(iter(_extension(raw_channel.get("_payload"), PAYLOAD_CONTENT)), None)
    else:
        topic, content = None, None
        filters = (compile_criteria(ctx, criteria, "Subscription.criteria"),)
    channel = parse_channel(raw_channel, backport, content, egress)
    heartbeat = next(iter(_extension(raw_channel, HEARTBEAT_PERIOD)), None)
    timeout = next(iter(_extension(raw_channel, TIMEOUT)), None)
    max_count = next(iter(_extension(raw_channel, MAX_COUNT)), None)
    return Subscription(resource["id"], version_id, status, backport, topic, filters, channel,
                        int(heartbeat) if heartbeat else None, float(timeout) if timeout else 10.0,
                        int(max_count) if max_count else 1, _end(resource.get("end")),
                        status == "error" and str(resource.get("error") or "").startswith(MATCHING_STOPPED),
                        _owner(resource))


def with_owner(resource: dict[str, Any], grant: Grant | None) -> dict[str, Any]:
    """`resource` owned by `grant` (its owner extension replaced; none without a grant)."""
    extensions = [e for e in resource.get("extension") or () if e.get("url") != OWNER]
    if grant is not None:
        extensions.append({"url": OWNER, "valueString": orjson.dumps(grant.record()).decode()})
    owned = {key: value for key, value in resource.items() if key != "extension"}
    return {**owned, "extension": extensions} if extensions else owned


def _owner(resource: dict[str, Any]) -> Grant | None:
    recorded = next(iter(_extension(resource, OWNER)), None)
    if not isinstance(recorded, str):
        return None
    try:
        return Grant.from_record(orjson.loads(recorded))
    except (orjson.JSONDecodeError, AttributeError):
        return Grant("")  # unreadable: an owner that may see nothing


def _end(value: Any) -> datetime | None:
    """Subscription.end (an instant; validation has checked its form)."""
    if not isinstance(value, str):
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _check_topic_filters(topic: Topic, filters: tuple[Filter, ...]) -> None:
    expression = ("Subscription.criteria.extension",)
    if not topic.resource_types and not filters:
        raise FhirError(422, "required", f"The topic {topic.url} needs filter criteria naming a resource type "
                                         "(e.g. Observation?code=…)", expression)
    wrong = [f.text for f in filters if topic.resource_types and f.resource_type not in topic.resource_types]
    if wrong:
        raise FhirError(422, "invalid", f"Filter criteria {', '.join(wrong)} do not fit the topic {topic.url} "
                                        f"(about {', '.join(topic.resource_types)})", expression)
