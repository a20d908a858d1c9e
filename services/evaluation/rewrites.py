"""Rewrite coverage and precision, defined on the catalog and the conversion history.

Definitions (the figures of ``qu eval report``):

* **kept rewrites**: the rewrites a predictor returns. Predictors return what the engine would
  publish, after the guardrails (:mod:`services.evaluation.predictors`), so every rewrite seen
  here is a kept one.
* **coverage** of a type (substitute, broader, synonym): the share of evaluated queries with at
  least one kept rewrite of that type; ``any`` is the share with at least one rewrite at all.
* **what a rewrite would retrieve**: the categories of the first results page (20 products) of
  :class:`services.catalog.retrieval.CatalogRetriever`, a keyword search over product names,
  brands and category paths (its docstring has the details; the guardrails use the same search).
  A rewrite none of whose words all meet in one product retrieves nothing.
* **what the query converted to**: the category paths of the query's entry in the conversion
  history (``qu conversions build``; the stored top-K list, full paths).
* **precision** of a type: among kept rewrites of queries that have a conversion history entry
  (``judged``), the share whose retrieved categories share at least one path with the query's
  converted categories. Rewrites of queries without conversions are counted as ``unjudged``;
  a type with nothing judged (or no history given) has precision null, not 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.catalog.retrieval import CatalogRetriever, fold_plural
from services.conversions.history import QueryConversions
from services.domain import RewriteType, Understanding

__all__ = ["CatalogRetriever", "ConvertedCategories", "RewriteScores", "fold_plural"]  # retriever re-exported


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
