"""The SubscriptionTopics Hearth defines (R5 Backport IG on R4), by canonical URL.

A topic says which changes are events: the resource types it is about, the interactions, and for some
a trigger comparing the previous version with the new one (an Encounter *becoming* in-progress).
A subscription narrows a topic with filter criteria (`Type?param=value`, any search parameter of the
type); `resource-change` takes its resource type from the filters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

TOPIC_BASE = "http://hearth.dev/fhir/SubscriptionTopic"

Trigger = Callable[[dict | None, dict | None], bool]
"""trigger(previous body or None, new body or None (deleted)): is this change an event of the topic?"""


@dataclass(frozen=True, slots=True)
class Topic:
    url: str
    title: str
    description: str
    resource_types: tuple[str, ...]  # empty: any type, named by the subscription's filters
    interactions: frozenset[str]
    trigger: Trigger | None = None

    @property
    def needs_previous(self) -> bool:
        return self.trigger is not None


def _status_becomes(status: str) -> Trigger:
    def trigger(previous: dict | None, current: dict | None) -> bool:
        return (current is not None and current.get("status") == status
                and (previous is None or previous.get("status") != status))
    return trigger


_ALL = frozenset({"create", "update", "delete"})

TOPICS: dict[str, Topic] = {topic.url: topic for topic in (
    Topic(f"{TOPIC_BASE}/resource-change", "Resource created, updated or deleted",
          "Any create, update or delete of a resource of the type the filter criteria name "
          "(e.g. Observation?code=http://loinc.org|8867-4); filters: any search parameter of that type.", (), _ALL),
    Topic(f"{TOPIC_BASE}/encounter-start", "Encounter started",
          "An Encounter's status becomes in-progress (created so, or updated to it); filters: Encounter "
          "search parameters (e.g. Encounter?patient=Patient/123).", ("Encounter",), frozenset({"create", "update"}),
          _status_becomes("in-progress")),
    Topic(f"{TOPIC_BASE}/encounter-end", "Encounter ended",
          "An Encounter's status becomes finished; filters: Encounter search parameters.",
          ("Encounter",), frozenset({"create", "update"}), _status_becomes("finished")),
    Topic(f"{TOPIC_BASE}/new-observation", "New Observation",
          "An Observation is created; filters: Observation search parameters "
          "(e.g. Observation?patient=Patient/123).", ("Observation",), frozenset({"create"})),
)}


def topic_summary() -> list[dict[str, Any]]:
    """(url, title) of each topic, for the CapabilityStatement."""
    return [{"url": topic.url, "title": topic.title} for topic in TOPICS.values()]
