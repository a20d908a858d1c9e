"""The benchmark's events and its head-tag seed: realistic queries, and a cache that answers a chosen share.

Events come from the traffic generator (Zipf head, fresh tail, typos, casing). The seed is the
most frequent normalized queries of exactly those events, taken until they make up the asked
hit ratio, so the share of events answered from the cache is the one asked for (within one
event), whatever the traffic's shape. The cached answer is the catalog-lexicon tagger's, with
the catalog's own placement of the tagged types as categories: the same size and guardrail
work as a teacher's answer, without a teacher (nor its embedding model).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Producer
from pydantic import SecretStr

from services.cache import HeadTagStore, connect_head_tag_cache, publish_head_tags
from services.catalog.artifacts import Catalog
from services.catalog.model import parse_path
from services.domain import CategoryScore, Understanding
from services.errors import QuError
from services.kafka_clients import producer
from services.normalize import normalize_query
from services.tagging.lexicon_tagger import LexiconTagger
from services.traffic import TrafficConfig, generate_traffic
from services.traffic.model import SearchEvent
from services.traffic.queries import QueryUniverse

SEED_VERSION = "bench-seed"
MAX_SEED_CATEGORIES = 3


class BenchError(QuError):
    pass


@dataclass(frozen=True, slots=True)
class BenchEvent:
    query: str  # as a shopper typed it
    key: str  # its normalized form: the Kafka key, and the cache key


@dataclass(slots=True)
class Workload:
    events: list[BenchEvent]  # the measured stream, in traffic order
    head: dict[str, int]  # the seeded normalized queries -> how many of ``events`` ask them
    misses: list[BenchEvent]  # queries the seed does not hold, for the miss-path phase

    @property
    def expected_hits(self) -> int:
        return sum(self.head.values())


def default_warmup(events: int) -> int:
    """Warm-up events before a measured phase of ``events``: a tenth of them, 100 to 1,000."""
    return min(1000, max(100, events // 10))


def plan_workload(catalog: Catalog, *, events: int, hit_ratio: float, seed: int, miss_events: int) -> Workload:
    universe = QueryUniverse(catalog)  # built once: the two traffic runs below share it
    stream = _events(generate_traffic(catalog, TrafficConfig(events=events, seed=seed), universe).events)
    if not stream:
        raise BenchError("the traffic generator made no usable events: is the catalog empty?")
    counts = Counter(e.key for e in stream)
    head = choose_head(counts, round(hit_ratio * len(stream)))
    misses: list[BenchEvent] = []
    if miss_events > 0:
        # Another seed's traffic: its tail queries are fresh, so few of them are in the seed.
        extra = generate_traffic(catalog, TrafficConfig(events=max(miss_events, 1000), seed=seed + 1), universe)
        pool = [e for e in _events(extra.events) if e.key not in head]
        pool = pool or [e for e in stream if e.key not in head]  # a tiny catalog's traffic may be all head
        misses = [pool[i % len(pool)] for i in range(miss_events)] if pool else []
    return Workload(stream, head, misses)


def _events(raw: Iterable[SearchEvent]) -> list[BenchEvent]:
    out = []
    for event in raw:
        key = normalize_query(event.query)
        if key:  # a query with no words would be dead-lettered, not annotated: not what is measured here
            out.append(BenchEvent(event.query, key))
    return out


def choose_head(counts: Counter[str], target_hits: int) -> dict[str, int]:
    """The most frequent queries whose counts add up to ``target_hits`` (as close as the counts allow).

    Most frequent first, like a real head cache; a query that would overshoot is skipped in favour
    of rarer ones, so a target is met exactly once the singletons of the tail are reached.
    """
    head: dict[str, int] = {}
    total = 0
    for query, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if total >= target_hits:
            break
        if total + count <= target_hits:
            head[query] = count
            total += count
    return head


def seed_entries(catalog: Catalog, queries: Iterable[str]) -> list[tuple[str, Understanding, str]]:
    tagger = LexiconTagger(catalog)
    entries = []
    for query in queries:
        tags = tagger.tag(query)
        prior = sorted(tagger.category_prior(tags).items(), key=lambda item: (-item[1], item[0]))
        # Ordered by the catalog's own placement; scored like a confident teacher's categories (the guardrail
        # drops cosine scores < 0.25, and a prior share is not a cosine), so the cache answers pass it whole.
        categories = [
            CategoryScore(parse_path(path), round(0.5 + 0.5 * share, 4)) for path, share in prior[:MAX_SEED_CATEGORIES]
        ]
        entries.append((query, Understanding(tags, categories, [], SEED_VERSION), SEED_VERSION))
    return entries


def publish_seed(producer: Producer, catalog: Catalog, head: Iterable[str], run_id: str) -> int:
    return publish_head_tags(producer, run_id, seed_entries(catalog, head))


@contextlib.contextmanager
def seeded_head(
    bootstrap: str,
    redis_url: str,
    password: SecretStr | None,
    catalog: Catalog,
    head: Iterable[str],
    run_id: str,
    *,
    timeout_s: float,
    report: Callable[[str], None],
) -> Iterator[tuple[int, float]]:
    """``head`` published as the head-tag run ``run_id`` and active in the stack's Redis (``password`` is its
    own: settings.redis_url may name another Redis): ``(queries seeded, seconds to activation)``.

    When the block ends the seed is withdrawn (an empty run activated): its answers are a measurement's, not a
    teacher's, so a stack the measurement did not start serves none of them afterwards. Best effort: the
    withdrawal never hides the error that ended the block."""
    seeded = publish_seed(producer(bootstrap), catalog, head, run_id)
    activation_s = wait_for_run(redis_url, run_id, password=password, timeout_s=timeout_s)
    report(f"seeded {seeded} head queries as run {run_id} (active after {activation_s:.1f} s)")
    try:
        yield seeded, activation_s
    finally:
        with contextlib.suppress(QuError):
            publish_seed(producer(bootstrap), catalog, (), f"{run_id}-done")
            wait_for_run(redis_url, f"{run_id}-done", password=password, timeout_s=30)


def wait_for_run(redis_url: str, run_id: str, *, password: SecretStr | None, timeout_s: float) -> float:
    """Block until the refresher made ``run_id`` the active run; returns the seconds it took."""
    return asyncio.run(_wait_for_run(redis_url, run_id, password, timeout_s))


async def _wait_for_run(redis_url: str, run_id: str, password: SecretStr | None, timeout_s: float) -> float:
    started = time.monotonic()
    redis = connect_head_tag_cache(redis_url, password=password, socket_timeout_s=2.0, connect_timeout_s=2.0)
    store = HeadTagStore(redis)
    active: str | None = None
    try:
        while time.monotonic() - started < timeout_s:
            active = await store.active_run()
            if active == run_id:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    raise BenchError(
        f"the head-tag refresher did not activate the seed run {run_id} within {timeout_s:.0f} s "
        f"(active run: {active}); see the refresher's log under STATE_DIR/stack/logs"
    )
