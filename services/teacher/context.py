"""Context engineering for the offline teacher: what it is told about one query (RAG over catalog and history).

For each normalized query :class:`ContextBuilder` retrieves

* categories: the top-K converted categories from conversion history, topped up with the category
  paths nearest the query by embedding when the history is thin (a new or rare query);
* brands: catalog brands close to the query (or one of its word n-grams) by embedding, by spelling
  (character-trigram Jaccard, so "pepridge farm" still finds Pepperidge Farm) and from conversions,
  each tagged with why it was retrieved. This is what lets a brand-only query be read as a brand;
* product types and attributes: what :class:`LexiconTagger` tags, plus the types nearest by embedding;
* few-shot examples: the most similar already-validated records, per task (:class:`ExamplePool`);
* the session's later searches, passed through for session-aware rewrites.

Every query costs one ``encode`` call (the query and its n-grams together); :meth:`ContextBuilder.build_many`
encodes a whole batch of queries in one call.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.catalog.artifacts import Catalog
from services.catalog.model import format_path
from services.catalog.spelling import trigram_jaccard, trigrams
from services.conversions.store import ConversionHistory
from services.domain import Role, Tag
from services.embeddings import SentenceEmbedder, Vectors
from services.tagging.lexicon_tagger import SUGGESTED_PRIOR_WEIGHT, CategoryIndexMissing, LexiconTagger
from services.teacher.context_types import (
    AttributeCandidate,
    BrandCandidate,
    CategoryCandidate,
    FewShotExample,
    TaskName,
    TeacherContext,
)

__all__ = ["ContextBuilder", "ExamplePool", "ngrams", "trigram_jaccard", "trigrams"]

MAX_NGRAM = 3
# A history with fewer conversions than this is "thin": embedding neighbours are added to it.
MIN_HISTORY_CONVERSIONS = 5
# Below these a brand neighbour is noise, not a candidate (MiniLM puts unrelated short names near 0.3-0.5).
MIN_BRAND_EMBEDDING = 0.55
MIN_BRAND_STRING = 0.35
# A retrieved brand this close steers the category neighbours like a tagged brand would.
PRIOR_BRAND_SCORE = 0.6


def ngrams(query: str, max_n: int = MAX_NGRAM) -> list[str]:
    """The query's word n-grams (n <= ``max_n``) but the query itself, longest first, in query order."""
    words = query.split()
    out = [" ".join(words[i : i + n]) for n in range(min(max_n, len(words)), 0, -1) for i in range(len(words) - n + 1)]
    return [g for g in dict.fromkeys(out) if g != query]


@dataclass(slots=True)
class _Record:
    example: FewShotExample
    vector: Vectors | None = None


class ExamplePool:
    """Already validated answers, retrievable by query similarity per task (the teacher's few-shot memory).

    Vectors are computed lazily, all pending records in one ``encode`` call, and cached per query text;
    each task's matrix is kept and extended as records arrive, so a lookup costs one matrix-vector
    product however many answers a run has validated.
    """

    def __init__(self, embedder: SentenceEmbedder) -> None:
        self.embedder = embedder
        self._records: dict[TaskName, list[_Record]] = defaultdict(list)
        self._vectors: dict[str, Vectors] = {}
        self._matrices: dict[TaskName, Vectors] = {}

    def __len__(self) -> int:
        return sum(len(r) for r in self._records.values())

    def add(self, query: str, task: TaskName, answer: dict[str, Any], reasoning: str = "") -> None:
        self._records[task].append(_Record(FewShotExample(query, answer, reasoning, task)))

    def nearest(self, query: str, task: TaskName, k: int) -> list[FewShotExample]:
        return self.nearest_to(self._embed([query])[query], task, k, exclude=query)

    def nearest_to(self, vector: Vectors, task: TaskName, k: int, *, exclude: str = "") -> list[FewShotExample]:
        """The ``k`` records of ``task`` most similar to a unit query vector, best first (never ``exclude``)."""
        records = self._records.get(task, [])
        if not records or k <= 0:
            return []
        scores = self._matrix(task) @ vector.astype(np.float32)
        order = np.argsort(-scores, kind="stable")  # stable: ties keep insertion order (deterministic)
        out: list[FewShotExample] = []
        for i in order:
            if records[i].example.query != exclude:
                out.append(records[i].example)
                if len(out) == k:
                    break
        return out

    def _matrix(self, task: TaskName) -> Vectors:
        records = self._records[task]
        matrix = self._matrices.get(task)
        have = 0 if matrix is None else len(matrix)
        if have < len(records):
            fresh = records[have:]
            vectors = self._embed([r.example.query for r in fresh])
            rows = np.stack([vectors[r.example.query] for r in fresh]).astype(np.float32)
            matrix = rows if matrix is None else np.concatenate([matrix, rows])
            self._matrices[task] = matrix
        assert matrix is not None
        return matrix

    def _embed(self, texts: Sequence[str]) -> dict[str, Vectors]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            for text, vector in zip(missing, self.embedder.encode(missing), strict=True):
                self._vectors[text] = vector
        return {t: self._vectors[t] for t in texts}


class ContextBuilder:
    """Builds the :class:`TeacherContext` of normalized queries from one catalog (with embeddings)."""

    def __init__(
        self,
        catalog: Catalog,
        conversions: ConversionHistory | None,
        embedder: SentenceEmbedder,
        *,
        top_k: int = 5,
        examples_per_task: int = 3,
    ) -> None:
        if catalog.embeddings is None:
            raise CategoryIndexMissing(
                "the teacher's context needs catalog embeddings: import the catalog with an embedding model"
            )
        if catalog.embeddings.model_id != embedder.model_id:
            raise ValueError(
                f"the catalog was embedded with {catalog.embeddings.model_id}, the embedder is {embedder.model_id}"
            )
        self.catalog = catalog
        self.embeddings = catalog.embeddings
        self.conversions = conversions
        self.embedder = embedder
        self.top_k = top_k
        self.examples_per_task = examples_per_task
        self.tagger = LexiconTagger(catalog)
        # Trigram inverted index over every brand alias: a query scores only the aliases it shares a trigram with.
        self._aliases: list[tuple[str, str, frozenset[str]]] = []  # (alias, canonical, trigrams)
        self._by_trigram: dict[str, list[int]] = defaultdict(list)
        for entry in sorted(catalog.brands.entries.values(), key=lambda e: e.key):
            for alias in dict.fromkeys((entry.key, *entry.aliases)):
                grams = trigrams(alias)
                for gram in grams:
                    self._by_trigram[gram].append(len(self._aliases))
                self._aliases.append((alias, entry.canonical, grams))

    def build(
        self,
        normalized_query: str,
        *,
        session_followups: Sequence[str] = (),
        examples_pool: ExamplePool | None = None,
    ) -> TeacherContext:
        followups = {normalized_query: tuple(session_followups)}
        return self.build_many([normalized_query], session_followups=followups, examples_pool=examples_pool)[0]

    def build_many(
        self,
        queries: Sequence[str],
        *,
        session_followups: Mapping[str, Sequence[str]] | None = None,
        examples_pool: ExamplePool | None = None,
    ) -> list[TeacherContext]:
        """One context per normalized query, all queries and their n-grams embedded in one call."""
        texts = list(dict.fromkeys(t for q in queries for t in (q, *ngrams(q))))
        vectors = dict(zip(texts, self.embedder.encode(texts), strict=True)) if texts else {}
        out = []
        for query in queries:
            tags = self.tagger.tag(query)
            qvec = vectors[query]
            examples: tuple[FewShotExample, ...] = ()
            if examples_pool is not None:
                examples = tuple(
                    e
                    for task in TaskName
                    for e in examples_pool.nearest_to(qvec, task, self.examples_per_task, exclude=query)
                )
            grams = np.stack([vectors[t] for t in (query, *ngrams(query))])
            brands = self._brands(query, grams)
            prior_tags = list(tags)
            if brands and brands[0].score >= PRIOR_BRAND_SCORE and not any(t.role is Role.BRAND for t in tags):
                # A brand the lexicon missed ("pepridge farm") still says where to look for categories.
                prior_tags.append(Tag(Role.BRAND, 0, len(query), query, brands[0].brand))
            out.append(
                TeacherContext(
                    normalized_query=query,
                    brands=brands,
                    categories=self._categories(query, qvec, prior_tags),
                    product_types=self._product_types(qvec, tags),
                    attributes=self._attributes(query, tags),
                    examples=examples,
                    session_followups=tuple((session_followups or {}).get(query, ())),
                )
            )
        return out

    # --- the parts of a context ------------------------------------------------------------------

    def _categories(self, query: str, qvec: Vectors, tags: list[Tag]) -> tuple[CategoryCandidate, ...]:
        """Converted categories (count, cosine to the query), then embedding neighbours if the history is thin.

        ``score`` is always the cosine similarity of the query to the path: the teacher weighs it
        against the conversion count, and the guardrail thresholds the same number.
        """
        keys = self.embeddings.categories.keys
        similarity = self.embeddings.categories.vectors @ qvec
        column = {key: j for j, key in enumerate(keys)}

        def cosine(path: tuple[str, ...]) -> float:
            j = column.get(format_path(path))
            return float(similarity[j]) if j is not None else 0.0

        found: list[CategoryCandidate] = []
        history = self.conversions.get_normalized(query) if self.conversions is not None else None
        if history is not None:
            for c in history.categories[: self.top_k]:
                found.append(CategoryCandidate(tuple(c.path), c.count, cosine(tuple(c.path))))
        if history is None or history.conversions < MIN_HISTORY_CONVERSIONS or len(found) < self.top_k:
            # The catalog's placement of the tagged product type steers the neighbours (see SUGGESTED_PRIOR_WEIGHT).
            nearest = self.tagger.nearest_categories(qvec, self.top_k, tags=tags, prior_weight=SUGGESTED_PRIOR_WEIGHT)
            seen = {c.path for c in found}
            for n in nearest:
                if len(found) >= self.top_k:
                    break
                if n.path not in seen:
                    found.append(CategoryCandidate(tuple(n.path), 0, n.score))
        return tuple(found)

    def _brands(self, query: str, grams: Vectors) -> tuple[BrandCandidate, ...]:
        """Brands by meaning, by spelling and by conversions; one entry per brand, its best reason."""
        best: dict[str, BrandCandidate] = {}

        def offer(candidate: BrandCandidate) -> None:
            seen = best.get(candidate.brand)
            if seen is None or candidate.score > seen.score:
                best[candidate.brand] = candidate

        brands = self.embeddings.brands
        if brands.keys:
            # Each brand's best cosine over the query and its n-grams ("pepperidge farm cookies" -> "pepperidge farm").
            scores = (brands.vectors @ grams.T).max(axis=1)
            for i in np.argsort(-scores, kind="stable")[: self.top_k]:
                entry = self.catalog.brands.entries.get(brands.keys[i])
                if entry is not None and scores[i] >= MIN_BRAND_EMBEDDING:
                    offer(BrandCandidate(entry.canonical, float(scores[i]), "embedding"))
        for canonical, score in self._string_matches(query)[: self.top_k]:
            offer(BrandCandidate(canonical, score, "string"))
        history = self.conversions.get_normalized(query) if self.conversions is not None else None
        if history is not None and history.conversions:
            for b in history.brands[: self.top_k]:
                offer(BrandCandidate(b.brand, b.count / history.conversions, "conversions"))
        ranked = sorted(best.values(), key=lambda b: (-b.score, b.brand))
        return tuple(ranked[: self.top_k])

    def _string_matches(self, query: str) -> list[tuple[str, float]]:
        """(canonical brand, best trigram Jaccard of an alias with the query or an n-gram), best first."""
        best: dict[str, float] = {}
        for text in (query, *ngrams(query)):
            grams = trigrams(text)
            shared: Counter[int] = Counter(i for g in grams for i in self._by_trigram.get(g, ()))
            for i, n in shared.items():
                _, canonical, alias_grams = self._aliases[i]
                score = n / (len(grams) + len(alias_grams) - n)
                if score >= MIN_BRAND_STRING and score > best.get(canonical, 0.0):
                    best[canonical] = score
        return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))

    def _product_types(self, qvec: Vectors, tags: list[Tag]) -> tuple[str, ...]:
        tagged = [t.canonical for t in tags if t.role is Role.PRODUCT]
        nearest = [key for key, _ in self.embeddings.product_types.nearest(qvec, self.top_k)]
        return tuple(dict.fromkeys([*tagged, *nearest]))[: max(self.top_k, len(tagged))]

    def _attributes(self, query: str, tags: list[Tag]) -> tuple[AttributeCandidate, ...]:
        # Kinds come from the vocabulary's own match (patterns included); the tagger decides which spans win.
        kinds = {m.canonical: m.kind.value for m in self.catalog.attributes.match(query)}
        values = [t.canonical for t in tags if t.role is Role.ATTRIBUTE] + list(kinds)
        return tuple(AttributeCandidate(v, kinds.get(v, "other")) for v in dict.fromkeys(values))
