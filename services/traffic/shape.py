"""The shape of a query stream: how concentrated the head is and how long the tail."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from services.normalize import normalize_query


@dataclass(frozen=True, slots=True)
class TrafficShape:
    events: int
    distinct_queries: int  # by normalized query, the cache key
    top_1000_share: float  # share of events made by the 1,000 most frequent queries
    singleton_share: float  # share of distinct queries seen exactly once
    top_queries: list[tuple[str, int]]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def traffic_shape(queries: Iterable[str], *, top: int = 10) -> TrafficShape:
    counts = Counter(normalize_query(q) for q in queries)
    events = sum(counts.values())
    head = sum(n for _, n in counts.most_common(1000))
    singletons = sum(1 for n in counts.values() if n == 1)
    return TrafficShape(
        events=events,
        distinct_queries=len(counts),
        top_1000_share=head / events if events else 0.0,
        singleton_share=singletons / len(counts) if counts else 0.0,
        top_queries=counts.most_common(top),
    )
