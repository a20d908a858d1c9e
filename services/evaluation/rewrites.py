"""Rewrite coverage and precision, defined on the catalog and the conversion history.

Definitions (the figures of ``qu eval report``):

* **kept rewrites**: the rewrites a predictor returns. Predictors return what the engine would
  publish, after the guardrails (:mod:`services.evaluation.predictors`), so every rewrite seen
  here is a kept one.
* **coverage** of a type (substitute, broader, synonym): the share of evaluated queries with at
  least one kept rewrite of that type; ``any`` is the share with at least one rewrite at all.
* **what a rewrite would retrieve** (:class:`CatalogRetriever`): a plain keyword search over the
  catalog. The rewrite is normalized (:func:`services.normalize.normalize_query`) and split into
  words; a product matches when every word occurs among the words of its name, its brand or its
  category path (so "frozen desserts" finds products filed under "frozen > frozen dessert"), after
  folding a plural "s"/"es". Matches are ranked by popularity (then product id) and the first
  ``page`` (default 20, one results page) are kept; their category paths are what it retrieves.
  A rewrite none of whose words all meet in one product retrieves nothing.
* **what the query converted to**: the category paths of the query's entry in the conversion
  history (``qu conversions build``; the stored top-K list, full paths).
* **precision** of a type: among kept rewrites of queries that have a conversion history entry
  (``judged``), the share whose retrieved categories share at least one path with the query's
  converted categories. Rewrites of queries without conversions are counted as ``unjudged``;
  a type with nothing judged (or no history given) has precision null, not 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.annotation.model import RewriteType, Understanding
from services.catalog.model import CategoryPath, Product
from services.conversions.history import QueryConversions
from services.normalize import normalize_query

__all__ = ["CatalogRetriever", "ConvertedCategories", "RewriteScores", "fold_plural"]

DEFAULT_PAGE = 20
_KEEP_ENDINGS = ("ss", "us", "is")
_ES_ENDINGS = ("oes", "ches", "shes", "xes", "sses", "zes")


def fold_plural(word: str) -> str:
    """A crude English singular: "bananas" -> "banana", "tomatoes" -> "tomato"; "hummus", "swiss" unchanged."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP_ENDINGS):
        return word
    if word.endswith(_ES_ENDINGS):
        return word[:-2]
    return word[:-1]


def _words(text: str) -> list[str]:
    return [fold_plural(w) for w in normalize_query(text).split()]


class CatalogRetriever:
    """Keyword search over product name, brand and category path words (see the module docstring)."""

    def __init__(self, products: Sequence[Product], *, page: int = DEFAULT_PAGE) -> None:
        if page < 1:
            raise ValueError(f"page must be at least 1, got {page}")
        self.page = page
        # Best first once, so a search keeps the first ``page`` of an ordered intersection.
        self._products = sorted(products, key=lambda p: (-p.popularity, p.product_id))
        self._index: dict[str, set[int]] = {}
        for i, product in enumerate(self._products):
            words = set(_words(product.name)) | set(_words(product.brand))
            for level in product.category_path:
                words.update(_words(level))
            for word in words:
                self._index.setdefault(word, set()).add(i)

    def products(self, query: str) -> list[Product]:
        """The first ``page`` matching products, best first."""
        words = set(_words(query))
        if not words:
            return []
        postings = sorted((self._index.get(w, set()) for w in words), key=len)
        hits = set(postings[0]).intersection(*postings[1:])
        return [self._products[i] for i in sorted(hits)[: self.page]]

    def categories(self, query: str) -> set[CategoryPath]:
        return {p.category_path for p in self.products(query)}


class ConvertedCategories(Protocol):
    """What a query converted to: :class:`services.conversions.ConversionHistory` has this method."""

    def get(self, query: str) -> QueryConversions | None: ...


@dataclass(slots=True)
class _TypeCounts:
    covered: int = 0  # queries with at least one rewrite of the type
    kept: int = 0  # rewrites of the type
    judged: int = 0
    precise: int = 0
    retrieves_nothing: int = 0  # judged rewrites the catalog search finds nothing for

    def to_json(self, queries: int, *, judging: bool = True) -> dict[str, Any]:
        # Null, not 0.0, when nothing was judged: no rewrite is not the same as every rewrite wrong.
        precision = round(self.precise / self.judged, 4) if self.judged and judging else None
        return {
            "coverage": round(self.covered / queries, 4) if queries else 0.0,
            "precision": precision,
            "queries_covered": self.covered,
            "kept": self.kept,
            "judged": self.judged,
            "precise": self.precise,
            "unjudged": self.kept - self.judged,
            "retrieves_nothing": self.retrieves_nothing,
        }


@dataclass(slots=True)
class RewriteScores:
    queries: int = 0
    with_any: int = 0
    with_conversions: int = 0
    per_type: dict[RewriteType, _TypeCounts] = field(default_factory=lambda: {t: _TypeCounts() for t in RewriteType})

    def add(
        self, query: str, understanding: Understanding, retriever: CatalogRetriever, history: ConvertedCategories
    ) -> None:
        self.queries += 1
        rewrites = understanding.rewrites
        self.with_any += bool(rewrites)
        conversions = history.get(query)
        converted = {c.path for c in conversions.categories} if conversions is not None else None
        self.with_conversions += converted is not None
        for rewrite_type in {r.type for r in rewrites}:
            self.per_type[rewrite_type].covered += 1
        for rewrite in rewrites:
            counts = self.per_type[rewrite.type]
            counts.kept += 1
            if converted is None:
                continue
            counts.judged += 1
            retrieved = retriever.categories(rewrite.query)
            counts.retrieves_nothing += not retrieved
            counts.precise += bool(retrieved & converted)

    def add_all(
        self,
        queries: Iterable[str],
        understandings: Iterable[Understanding],
        retriever: CatalogRetriever,
        history: ConvertedCategories,
    ) -> None:
        for query, understanding in zip(queries, understandings, strict=True):
            self.add(query, understanding, retriever, history)

    def to_json(self, *, judging: bool = True) -> dict[str, Any]:
        """``judging=False``: no conversion history was given, so every precision is null (not measured)."""
        total = _TypeCounts()
        for counts in self.per_type.values():
            total.kept += counts.kept
            total.judged += counts.judged
            total.precise += counts.precise
            total.retrieves_nothing += counts.retrieves_nothing
        total.covered = self.with_any
        return {
            "queries": self.queries,
            "queries_with_conversions": self.with_conversions,
            "per_type": {t.value: self.per_type[t].to_json(self.queries, judging=judging) for t in RewriteType},
            "any": total.to_json(self.queries, judging=judging),
        }
