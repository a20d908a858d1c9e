"""Aggregate conversions into, per normalized query, the categories and brands shoppers bought.

Each category (a product's full path) and each brand gets a count, the time of its latest
conversion and a score: the count with every conversion weighted ``0.5 ** (age / half_life)``,
where the age is measured back from the newest conversion in the whole log, not from the
clock, so the same log always gives the same scores. Lists are ranked by score, then count,
then name, and cut to the top K. Unbranded products (brand ``""``) count towards the query's
total but are not listed as a brand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from services.catalog.model import CategoryPath, Product
from services.conversions.reader import Conversion

__all__ = [
    "BrandCount",
    "CategoryCount",
    "ConversionAggregator",
    "QueryConversions",
    "aggregate_conversions",
    "roll_up",
]

_SECONDS_PER_DAY = 86_400.0
_K = TypeVar("_K", CategoryPath, str)


@dataclass(frozen=True, slots=True)
class CategoryCount:
    path: CategoryPath
    count: int
    last_ts: datetime
    score: float


@dataclass(frozen=True, slots=True)
class BrandCount:
    brand: str
    count: int
    last_ts: datetime
    score: float


@dataclass(frozen=True, slots=True)
class QueryConversions:
    """What shoppers converted on for one query key.

    ``conversions`` counts every conversion of the query, including those whose category or
    brand fell outside the top K, and unbranded ones, so ``sum(c.count for c in categories)``
    may be less than it.
    """

    query: str
    conversions: int
    last_ts: datetime
    categories: tuple[CategoryCount, ...]
    brands: tuple[BrandCount, ...]


def _to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


class _Tally:
    """Count, latest time and decayed score of one (query, category or brand) pair.

    The score is kept relative to this tally's own latest time so it never overflows however
    long the log spans, and it can be computed while streaming before the log's newest time is
    known: it is rescaled to that time once, at the end.
    """

    __slots__ = ("count", "last", "score")

    def __init__(self) -> None:
        self.count = 0
        self.last = -math.inf
        self.score = 0.0

    def add(self, ts: float, per_second: float) -> None:
        if self.count == 0:
            self.score, self.last = 1.0, ts
        elif ts >= self.last:
            self.score = self.score * 2.0 ** ((self.last - ts) * per_second) + 1.0
            self.last = ts
        else:
            self.score += 2.0 ** ((ts - self.last) * per_second)
        self.count += 1

    def score_at(self, reference: float, per_second: float) -> float:
        # 12 significant digits: sums taken in a different order differ in the last bits, and a
        # tie between two equal histories must stay a tie so that count and name decide it.
        return float(f"{self.score * 2.0 ** ((self.last - reference) * per_second):.12g}")


class _QueryTally:
    __slots__ = ("brands", "categories", "count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = -math.inf
        self.categories: dict[CategoryPath, _Tally] = {}
        self.brands: dict[str, _Tally] = {}


class ConversionAggregator:
    """Streaming aggregation: :meth:`add` every conversion, then :meth:`result` once.

    Memory grows with the distinct (query, category) and (query, brand) pairs, not with the log.
    """

    def __init__(self, products: Mapping[str, Product], *, top_k: int, half_life_days: float) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not (math.isfinite(half_life_days) and half_life_days > 0):
            raise ValueError(f"half_life_days must be a positive number, got {half_life_days}")
        self.top_k = top_k
        self.half_life_days = half_life_days
        self._products = products
        self._per_second = 1.0 / (half_life_days * _SECONDS_PER_DAY)
        self._queries: dict[str, _QueryTally] = {}
        self.newest: float | None = None

    def add(self, conversion: Conversion) -> None:
        """Count one conversion; its product must be in ``products`` (the reader checks that)."""
        product = self._products[conversion.product_id]
        ts = conversion.ts
        tally = self._queries.get(conversion.query)
        if tally is None:
            tally = self._queries[conversion.query] = _QueryTally()
        tally.count += 1
        tally.last = max(tally.last, ts)
        if self.newest is None or ts > self.newest:
            self.newest = ts
        per_second = self._per_second
        path = product.category_path
        if path:  # a catalog read by the reader never has an empty path; a hand-made Product might
            entry = tally.categories.get(path)
            if entry is None:
                entry = tally.categories[path] = _Tally()
            entry.add(ts, per_second)
        if product.brand:
            brand = tally.brands.get(product.brand)
            if brand is None:
                brand = tally.brands[product.brand] = _Tally()
            brand.add(ts, per_second)

    def result(self) -> dict[str, QueryConversions]:
        """Every query's top-K categories and brands, keyed and ordered by query."""
        reference = self.newest if self.newest is not None else 0.0
        out: dict[str, QueryConversions] = {}
        for query in sorted(self._queries):
            tally = self._queries[query]
            categories = tuple(
                CategoryCount(path, count, _to_datetime(last), score)
                for path, count, last, score in self._top(tally.categories, reference)
            )
            brands = tuple(
                BrandCount(brand, count, _to_datetime(last), score)
                for brand, count, last, score in self._top(tally.brands, reference)
            )
            out[query] = QueryConversions(query, tally.count, _to_datetime(tally.last), categories, brands)
        return out

    def _top(self, tallies: Mapping[_K, _Tally], reference: float) -> list[tuple[_K, int, float, float]]:
        """The top K as (key, count, last, score), ranked by score, then count, then key.

        Only these become objects: a long tail of one-off categories is ranked as plain tuples.
        """
        scored = [(key, t.count, t.last, t.score_at(reference, self._per_second)) for key, t in tallies.items()]
        scored.sort(key=lambda e: (-e[3], -e[1], e[0]))
        return scored[: self.top_k]


def aggregate_conversions(
    conversions: Iterable[Conversion], products: Mapping[str, Product], *, top_k: int, half_life_days: float
) -> dict[str, QueryConversions]:
    """:class:`ConversionAggregator` in one call, for conversions already at hand."""
    aggregator = ConversionAggregator(products, top_k=top_k, half_life_days=half_life_days)
    for conversion in conversions:
        aggregator.add(conversion)
    return aggregator.result()


def roll_up(categories: Iterable[CategoryCount]) -> list[CategoryCount]:
    """Each listed path and every ancestor of it, with counts and scores of descendants added in.

    For callers that want broader categories ("dairy eggs" rather than "dairy eggs > milk").
    Scores add up because each is a sum of per-conversion weights. Ranked like the stored lists,
    uncut. Given a stored top-K list, an ancestor counts only the listed paths below it.
    """
    merged: dict[CategoryPath, tuple[int, datetime, float]] = {}
    for category in categories:
        for depth in range(1, len(category.path) + 1):
            prefix = category.path[:depth]
            seen = merged.get(prefix)
            if seen is None:
                merged[prefix] = (category.count, category.last_ts, category.score)
            else:
                count, last, score = seen
                merged[prefix] = (count + category.count, max(last, category.last_ts), score + category.score)
    out = [CategoryCount(path, count, last, float(f"{score:.12g}")) for path, (count, last, score) in merged.items()]
    out.sort(key=lambda c: (-c.score, -c.count, c.path))
    return out
