"""Guardrails: every tag, category and rewrite is checked against the catalog before it is published.

Shared by the real-time path and the offline teacher. A dropped item is recorded as a
:class:`GuardrailDecision` with its reason, so an annotation says what it left out and why.

What is checked, first the catalog binding (:mod:`services.guardrails.binding`: the trust boundary,
the same for every source), then the quality checks:

- tags: the span is the tagged text in the normalized query, names its entry (one of its aliases)
  and overlaps no earlier tag; a brand exists in the catalog under its canonical name or an alias;
  a product type is in the product-type lexicon or names a taxonomy node; an attribute is in the
  vocabulary or a recognised pattern (sizes, counts, percentages:
  :mod:`services.guardrails.attribute_patterns`). A kept tag carries the catalog's canonical value,
  never the model's string. Nothing outside the catalog can reach the cache, whatever the query
  told the model.
- scores: every confidence and score is a finite number in [0, 1].
- categories: the path is in the taxonomy, and its cosine similarity to the query passes
  ``category_min_similarity``. With an embedder that similarity is computed here, between the
  query's embedding and the path's stored embedding (the teacher's scores are re-ranking scores,
  not similarities); without one (the real-time path) the student's score, which is already that
  cosine, is used. At most ``max_categories`` are kept, best first.
- rewrites: no control, bidi or zero-width character; not empty, not the query itself, not a repeat,
  and retrieving at least one catalog
  product (:class:`~services.catalog.retrieval.CatalogRetriever`: "one percent milk" is valid and
  finds nothing a shopper could buy). With an embedder, also semantically
  related to the query (cosine >= ``rewrite_min_similarity``). A substitute must land in a
  plausible category: its own categories (the top categories of the product types it names,
  plus, with an embedder, its nearest category paths) share a department (or an aisle, see
  ``substitute_category_level``) with the query's kept categories (or, when none was kept, the
  query's own categories found the same way). Without an embedder only the product-type part
  of that test runs, and a substitute naming no known product type is not judged by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from services.catalog.artifacts import Catalog
from services.catalog.model import CategoryPath, format_path, parse_path
from services.catalog.retrieval import CatalogRetriever
from services.domain import (
    CategoryScore,
    GuardrailDecision,
    Rewrite,
    RewriteType,
    Understanding,
)
from services.embeddings import Vectors
from services.guardrails.binding import CatalogBinding
from services.guardrails.embedding_cache import EmbeddingCache, TextEncoder
from services.guardrails.thresholds import CategoryLevel, GuardrailThresholds
from services.normalize import normalize_query

if TYPE_CHECKING:
    from services.settings import Settings

# Reasons, one per rejection, so reports can count by them (the catalog binding's are in binding.py).
TOO_MANY_CATEGORIES = "more than {limit} categories"
REWRITE_IS_QUERY = "the rewrite is empty or the query itself"
REWRITE_REPEATED = "the same rewrite is already kept"
REWRITE_RETRIEVES_NOTHING = "retrieves no catalog product: useless for discovery"


def related_paths(a: CategoryPath, b: CategoryPath, level: CategoryLevel) -> bool:
    """Whether two paths share a department (or an aisle); a department path matches its aisles."""
    depth = 1 if level == "department" else 2
    if len(a) >= depth and len(b) >= depth:
        return a[:depth] == b[:depth]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return long[: len(short)] == short


class Guardrails:
    """Checks understandings against ``catalog``; see the module docstring for every check.

    ``embedder`` (a :class:`~services.embeddings.SentenceEmbedder`, or an :class:`EmbeddingCache`
    to share one cache between several guardrails) turns on the embedding checks; every text is
    embedded once per cache and every batch of :meth:`check_many` in one model call.
    ``record_kept`` also records a decision (``kept=True``) for each item that passed, for provenance.
    """

    def __init__(
        self,
        catalog: Catalog,
        thresholds: GuardrailThresholds | None = None,
        *,
        embedder: TextEncoder | EmbeddingCache | None = None,
        record_kept: bool = False,
    ) -> None:
        self.catalog = catalog
        self.thresholds = thresholds or GuardrailThresholds()
        self.record_kept = record_kept
        self.binding = CatalogBinding(catalog)
        if embedder is None or isinstance(embedder, EmbeddingCache):
            self.embeddings = embedder
        else:
            self.embeddings = EmbeddingCache(embedder)
        self._path_vectors: dict[CategoryPath, Vectors] | None = None
        self.leaf_paths: list[CategoryPath] = sorted(node.path for node in catalog.taxonomy.leaves)
        self._leaf_matrix: Vectors | None = None

    @classmethod
    def from_settings(
        cls,
        catalog: Catalog,
        settings: Settings,
        *,
        embedder: TextEncoder | EmbeddingCache | None = None,
        record_kept: bool = False,
        llm: bool = False,
    ) -> Guardrails:
        """The guardrails every process builds (worker, teacher, ``qu eval``): every ``QU_`` guardrail setting
        applies through :meth:`GuardrailThresholds.from_settings`, so none can be honoured by one and not another.
        ``llm``: for an LLM teacher's answers (a higher bar for its rewrites)."""
        thresholds = GuardrailThresholds.from_settings(settings, llm=llm)
        return cls(catalog, thresholds, embedder=embedder, record_kept=record_kept)

    # --- the entry points -----------------------------------------------------------------------

    def check(
        self, understanding: Understanding, normalized_query: str
    ) -> tuple[Understanding, list[GuardrailDecision]]:
        """The understanding with every item that fails a check removed, and the decisions that removed them."""
        return self.check_many([(understanding, normalized_query)])[0]

    def check_many(
        self, items: Sequence[tuple[Understanding, str]]
    ) -> list[tuple[Understanding, list[GuardrailDecision]]]:
        """:meth:`check` for each (understanding, normalized query), embedding every text of the batch at once."""
        if self.embeddings is not None:
            texts = [query for _, query in items]
            texts += [key for u, _ in items for key in (normalize_query(r.query) for r in u.rewrites) if key]
            self.embeddings.warm(texts)
        return [self._check_one(understanding, query) for understanding, query in items]

    def _check_one(
        self, understanding: Understanding, normalized_query: str
    ) -> tuple[Understanding, list[GuardrailDecision]]:
        # The binding first: what the quality checks below see (and sort, and compare) is catalog values only.
        bound, decisions = self.binding.bind(understanding, normalized_query, record_kept=self.record_kept)
        categories = self._check_categories(bound.categories, normalized_query, decisions)
        rewrites = self._check_rewrites(bound.rewrites, normalized_query, categories, decisions)
        return Understanding(bound.tags, categories, rewrites, understanding.version), decisions

    # --- similarities and categories, shared with the calibration -------------------------------

    def category_similarities(self, normalized_query: str, paths: Sequence[CategoryPath]) -> list[float]:
        """Cosine similarity of the query's embedding to each path's stored embedding (needs an embedder)."""
        cache = self._require_embeddings()
        query = cache.vector(normalized_query)
        vectors = self._vectors_of_paths(paths)
        return [float(np.dot(query, v)) for v in vectors]

    def text_similarity(self, a: str, b: str) -> float:
        cache = self._require_embeddings()
        return float(np.dot(cache.vector(a), cache.vector(b)))

    def text_categories(self, normalized_text: str) -> list[CategoryPath]:
        """Where a text lands: its product types' top categories, then (with an embedder) its nearest paths."""
        k = self.thresholds.substitute_category_top_k
        found: dict[CategoryPath, None] = {}
        for hit in self.catalog.types.find(normalized_text):
            for path, _ in hit.value.top_categories(k):
                found[path] = None
        if self.embeddings is not None and self.leaf_paths:
            if self._leaf_matrix is None:
                self._leaf_matrix = self.path_matrix(self.leaf_paths)
            scores = self._leaf_matrix @ self.embeddings.vector(normalized_text)
            for i in np.argsort(-scores, kind="stable")[:k]:
                found[self.leaf_paths[int(i)]] = None
        return list(found)

    def path_matrix(self, paths: Sequence[CategoryPath]) -> Vectors:
        """One unit row per path (stored vectors where the catalog has them)."""
        return np.stack(self._vectors_of_paths(paths))

    def query_matrix(self, normalized_texts: Sequence[str]) -> Vectors:
        """One unit row per text, the missing ones embedded in one call."""
        return self._require_embeddings().matrix(normalized_texts)

    def _require_embeddings(self) -> EmbeddingCache:
        if self.embeddings is None:
            raise ValueError("these guardrails were built without an embedder")
        return self.embeddings

    def _vectors_of_paths(self, paths: Sequence[CategoryPath]) -> list[Vectors]:
        """The catalog's stored vectors when the same model made them; the path's text embedded otherwise."""
        cache = self._require_embeddings()
        if self._path_vectors is None:
            self._path_vectors = {}
            stored = self.catalog.embeddings
            if stored is not None and stored.model_id == cache.model_id:
                for key, vector in zip(stored.categories.keys, stored.categories.vectors, strict=True):
                    self._path_vectors[parse_path(key)] = vector
        missing = [p for p in paths if p not in self._path_vectors]
        if missing:
            cache.warm([format_path(p) for p in missing])
            for path in missing:
                self._path_vectors[path] = cache.vector(format_path(path))
        return [self._path_vectors[p] for p in paths]

    # --- categories -----------------------------------------------------------------------------

    def _check_categories(
        self, categories: list[CategoryScore], normalized: str, decisions: list[GuardrailDecision]
    ) -> list[CategoryScore]:
        limit = self.thresholds.max_categories
        minimum = self.thresholds.category_min_similarity
        if self.embeddings is not None:
            similarities = self.category_similarities(normalized, [c.path for c in categories])
        else:
            similarities = [c.score for c in categories]
        kept: list[CategoryScore] = []
        # Best score first (the producer's ranking); the similarity only decides what is dropped.
        order = sorted(range(len(categories)), key=lambda i: -categories[i].score)
        for i in order:
            category, similarity = categories[i], similarities[i]
            item = format_path(category.path)
            if similarity < minimum:
                reason = f"similarity {similarity:.3f} < {minimum}"
                decisions.append(GuardrailDecision("category.similarity", item, False, reason))
            elif len(kept) >= limit:
                reason = TOO_MANY_CATEGORIES.format(limit=limit)
                decisions.append(GuardrailDecision("category.limit", item, False, reason))
            else:
                self._kept(decisions, "category.similarity", item, f"similarity {similarity:.3f} >= {minimum}")
                kept.append(category)
        return kept

    # --- rewrites -------------------------------------------------------------------------------

    def _check_rewrites(
        self,
        rewrites: list[Rewrite],
        normalized: str,
        categories: list[CategoryScore],
        decisions: list[GuardrailDecision],
    ) -> list[Rewrite]:
        kept: list[Rewrite] = []
        seen: set[tuple[RewriteType, str]] = set()
        query_paths: list[CategoryPath] | None = None  # computed on the first substitute
        for rewrite in rewrites:
            key = normalize_query(rewrite.query)
            item = f"{rewrite.type.value}={rewrite.query}"
            check, reason = "", ""
            if not key or key == normalized:
                check, reason = "rewrite.differs", REWRITE_IS_QUERY
            elif (rewrite.type, key) in seen:
                check, reason = "rewrite.duplicate", REWRITE_REPEATED
            elif not self.retriever.products(key):
                check, reason = "rewrite.retrieves", REWRITE_RETRIEVES_NOTHING
            elif self.embeddings is not None:
                similarity = self.text_similarity(normalized, key)
                if similarity < self.thresholds.rewrite_min_similarity:
                    check = "rewrite.similarity"
                    reason = f"similarity to the query {similarity:.3f} < {self.thresholds.rewrite_min_similarity}"
            if not reason and rewrite.type is RewriteType.SUBSTITUTE:
                if query_paths is None:
                    query_paths = [c.path for c in categories] or self.text_categories(normalized)
                problem = self.substitute_problem(query_paths, key)
                if problem is not None:
                    check, reason = "rewrite.category", problem
            if reason:
                decisions.append(GuardrailDecision(check, item, False, reason))
                continue
            seen.add((rewrite.type, key))
            self._kept(decisions, "rewrite", item, "related to the query")
            kept.append(rewrite)
        return kept

    @cached_property
    def retriever(self) -> CatalogRetriever:
        # Built on first use: the real-time path only needs it when a student starts writing rewrites.
        return CatalogRetriever(self.catalog.products)

    def substitute_problem(self, query_paths: Iterable[CategoryPath], normalized_rewrite: str) -> str | None:
        """Why a substitute lands in no plausible category, or None (also when there is nothing to judge by)."""
        query_paths = list(query_paths)
        rewrite_paths = self.text_categories(normalized_rewrite)
        if not query_paths or not rewrite_paths:
            return None
        level = self.thresholds.substitute_category_level
        if any(related_paths(q, r, level) for q in query_paths for r in rewrite_paths):
            return None
        depth = 1 if level == "department" else 2
        lands = sorted({format_path(p[:depth]) for p in rewrite_paths})
        wanted = sorted({format_path(p[:depth]) for p in query_paths})
        return f"lands in {', '.join(lands)}, not in the query's {level} ({', '.join(wanted)})"

    def _kept(self, decisions: list[GuardrailDecision], check: str, item: str, reason: str) -> None:
        if self.record_kept:
            decisions.append(GuardrailDecision(check, item, True, reason))
