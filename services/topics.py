"""The Kafka topics that are the engine's contract with the search platform, in one place."""

from __future__ import annotations

from dataclasses import dataclass

SEARCH_EVENTS = "qu.search-events.v1"
QUERY_ANNOTATIONS = "qu.query-annotations.v1"
CACHE_MISSES = "qu.cache-misses.v1"
HEAD_TAGS = "qu.head-tags.v1"
DEAD_LETTER = "qu.dead-letter.v1"
# The workers' consumer group (the Faust app id): its lag on SEARCH_EVENTS is what an operator watches.
WORKER_GROUP = "qu-annotate"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    purpose: str


# Keys are the normalized query everywhere the engine produces, so one query always lands on one
# partition and one worker. Partition counts bound how many workers can share the work.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(SEARCH_EVENTS, 6, "search events from the search platform (JSON or protobuf SearchEvent)"),
    TopicSpec(QUERY_ANNOTATIONS, 6, "QueryAnnotation per event, keyed by normalized query"),
    TopicSpec(CACHE_MISSES, 3, "queries the head cache did not know: the next teacher batch"),
    TopicSpec(HEAD_TAGS, 3, "HeadTags from the offline teacher, loaded into Redis by the refresher"),
    TopicSpec(DEAD_LETTER, 1, "DeadLetter: inputs that could not be processed, with the reason"),
)
