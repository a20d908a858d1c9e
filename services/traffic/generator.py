"""Search sessions, the events they make and the conversions that follow, deterministic for a seed.

Query frequencies follow a Zipf law over the head (ranked by the popularity of what
answers each query), mixed with fresh tail queries, follow-up searches that narrow the
previous one, typos and casing noise. Conversions mostly go to a product that answers
the query, sometimes to an unrelated popular one (searching "bread", buying bananas).
"""

from __future__ import annotations

import bisect
import itertools
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.catalog.artifacts import Catalog
from services.traffic.model import Conversion, LabelledQuery, SearchEvent, Tag
from services.traffic.queries import QueryUniverse


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    events: int
    seed: int = 0
    start: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    days: float = 7.0
    zipf_exponent: float = 1.05  # over the ranked head; ~1 is what search logs show
    zipf_offset: float = 3.0  # Zipf-Mandelbrot: flattens the very top ("milk" ~3% of searches, not 8%)
    tail_rate: float = 0.2  # a session's first search is a fresh tail query
    follow_up_rate: float = 0.45  # a session goes on with another search
    refine_rate: float = 0.5  # a follow-up narrows the previous query (else: a new one)
    misspell_rate: float = 0.05
    casing_rate: float = 0.1
    convert_rate: float = 0.5
    noise_rate: float = 0.1  # of conversions: an unrelated popular product
    users: int | None = None  # default: one user per ten events
    stores: int = 20

    def __post_init__(self) -> None:
        if self.events < 0:
            raise ValueError(f"events must be >= 0, got {self.events}")
        for name in (
            "tail_rate",
            "follow_up_rate",
            "refine_rate",
            "misspell_rate",
            "casing_rate",
            "convert_rate",
            "noise_rate",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")


@dataclass(slots=True)
class Traffic:
    events: list[SearchEvent] = field(default_factory=list)
    conversions: list[Conversion] = field(default_factory=list)
    labels: dict[str, LabelledQuery] = field(default_factory=dict)  # by the query as typed


class _Sampler:
    """Weighted choice by cumulative weights: O(log n) per draw, deterministic for the rng."""

    def __init__(self, weights: list[float]) -> None:
        self._cumulative = list(itertools.accumulate(weights))

    def draw(self, rng: random.Random) -> int:
        return bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])


def _vary_case(query: LabelledQuery, rng: random.Random) -> LabelledQuery:
    """Same length, other case ("Organic Milk", "ORGANIC MILK"), so span offsets still hold."""
    text = query.text.upper() if rng.random() < 0.2 else " ".join(w[:1].upper() + w[1:] for w in query.text.split(" "))
    spans = tuple(Tag(s.role, s.start, s.end, text[s.start : s.end], s.canonical) for s in query.spans)
    return LabelledQuery(text, spans, query.category, query.kind, query.products, query.weights)


def generate_traffic(catalog: Catalog, config: TrafficConfig, universe: QueryUniverse | None = None) -> Traffic:
    rng = random.Random(config.seed)
    universe = universe or QueryUniverse(catalog)
    head = universe.head
    if not head:
        raise ValueError("the catalog yields no queries: it needs products with names and product types")
    head_sampler = _Sampler(
        [1.0 / (rank + 1 + config.zipf_offset) ** config.zipf_exponent for rank in range(len(head))]
    )
    user_count = config.users or max(1, config.events // 10)
    # Shopper activity is skewed too: a few users search a lot.
    user_sampler = _Sampler([1.0 / (rank + 1) ** 0.8 for rank in range(user_count)])
    popular = _Sampler(universe.popularity)
    traffic = Traffic()
    span = timedelta(days=config.days).total_seconds()

    def fresh() -> LabelledQuery:
        if rng.random() < config.tail_rate:
            return universe.tail_query(rng)
        return head[head_sampler.draw(rng)]

    while len(traffic.events) < config.events:
        user_id = f"u{user_sampler.draw(rng):07d}"
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        store = f"store-{rng.randrange(config.stores):03d}"
        ts = config.start + timedelta(seconds=rng.random() * span)
        query = fresh()
        while True:
            typed = query
            if rng.random() < config.misspell_rate:
                typed = universe.misspell(typed, rng)
            if rng.random() < config.casing_rate:
                typed = _vary_case(typed, rng)
            event = SearchEvent(
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                typed.text,
                user_id,
                session_id,
                _iso(ts),
                context={"store_id": store},
            )
            traffic.events.append(event)
            traffic.labels.setdefault(typed.text, typed)
            if rng.random() < config.convert_rate:
                if rng.random() < config.noise_rate or not query.products:
                    product = universe.products[popular.draw(rng)]
                else:
                    product = universe.by_id[rng.choices(query.products, weights=query.weights, k=1)[0]]
                bought = ts + timedelta(seconds=rng.uniform(10, 300))
                traffic.conversions.append(
                    Conversion(event.event_id, typed.text, session_id, user_id, product.product_id, _iso(bought))
                )
            if len(traffic.events) >= config.events or rng.random() >= config.follow_up_rate:
                break
            ts += timedelta(seconds=rng.uniform(5, 90))
            query = universe.refine(query, rng) if rng.random() < config.refine_rate else fresh()
    # A stream is in time order; sessions were generated one at a time.
    traffic.events.sort(key=lambda e: (e.ts, e.event_id))
    traffic.conversions.sort(key=lambda c: (c.ts, c.event_id))
    return traffic


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
