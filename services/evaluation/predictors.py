"""What ``qu eval`` scores: anything that answers a batch of queries with :class:`Understanding` objects.

The offsets contract: a predictor is given each gold query **as it is in the gold file** and
returns tags whose offsets index that same text, so spans are compared with the gold ones
character for character. Models work on normalized text (the cache keys, the lexicons and the
student's ``QUERY`` are all :func:`services.normalize.normalize_query` output), so
:class:`NormalizingPredictor` normalizes inside with :func:`services.normalize.normalize_with_offsets`,
asks the model, and maps every tag back with ``NormalizedText.to_original`` exactly as the annotate
handler does before it publishes (``services.annotation.handler._to_original``): "Kellogg's" in a
gold file is normalized to "kelloggs", tagged [0, 8) there and scored as [0, 9) of "Kellogg's".
A query with no words left after normalization gets an empty answer, as the handler would not
send it to a model.

Every model that takes normalized queries in batches is wrapped the same way: give
:class:`NormalizingPredictor` a name and a function ``list[str] -> list[Understanding]`` (plain or
async). The predictors by name live in :mod:`services.evaluation.registry`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from services.catalog.artifacts import Catalog
from services.domain import Tag, Understanding
from services.embeddings import SentenceEmbedder
from services.errors import QuError
from services.normalize import NormalizedText, normalize_with_offsets
from services.tagging import LexiconTagger

__all__ = [
    "TOP_CATEGORIES",
    "BatchAnswer",
    "Guard",
    "NormalizingPredictor",
    "PredictionError",
    "Predictor",
    "lexicon_answer",
]

TOP_CATEGORIES = 3  # as the qu_student Triton model answers

# A model's answers for a batch of normalized queries, one per query, tags indexing each query.
BatchAnswer = Callable[[list[str]], Awaitable[list[Understanding]] | list[Understanding]]
# What the engine does to a model's answer before publishing it (the guardrails): (answer, normalized) -> kept.
Guard = Callable[[Understanding, str], Understanding]


class PredictionError(QuError):
    """A predictor failed or answered something that cannot be scored (wrong count, a span off the query)."""


class Predictor(Protocol):
    @property
    def name(self) -> str: ...

    async def predict(self, queries: Sequence[str]) -> list[Understanding]:
        """One answer per query, in order; tags index each query as given (see the module docstring)."""
        ...

    async def close(self) -> None: ...


class NormalizingPredictor:
    """A model on normalized queries, seen as a :class:`Predictor` of queries as typed."""

    def __init__(
        self,
        name: str,
        answer: BatchAnswer,
        *,
        guard: Guard | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._name = name
        self._answer = answer
        self._guard = guard
        self._close = close

    @property
    def name(self) -> str:
        return self._name

    async def predict(self, queries: Sequence[str]) -> list[Understanding]:
        normalized = [normalize_with_offsets(q) for q in queries]
        asked = [n.text for n in normalized if n.text]
        result = self._answer(asked)
        answers = await result if inspect.isawaitable(result) else result
        if len(answers) != len(asked):
            raise PredictionError(f"{self._name} answered {len(answers)} of {len(asked)} queries")
        out: list[Understanding] = []
        given = iter(answers)
        for text in normalized:
            if not text.text:
                out.append(Understanding())
                continue
            answer = next(given)
            if self._guard is not None:
                answer = self._guard(answer, text.text)
            tags = [self._to_original(tag, text) for tag in answer.tags]
            out.append(Understanding(tags, answer.categories, answer.rewrites, answer.version))
        return out

    def _to_original(self, tag: Tag, normalized: NormalizedText) -> Tag:
        if not 0 <= tag.start < tag.end <= len(normalized.text):
            raise PredictionError(
                f"{self._name} tagged [{tag.start}, {tag.end}) {tag.text!r}, outside the normalized query "
                f"{normalized.text!r}"
            )
        start, end = normalized.to_original(tag.start, tag.end)
        return Tag(tag.role, start, end, normalized.original[start:end], tag.canonical, tag.confidence)

    async def close(self) -> None:
        if self._close is not None:
            await self._close()


def lexicon_answer(
    catalog: Catalog, embedder: SentenceEmbedder, *, prior_weight: float = 0.0, spelling: bool = True
) -> BatchAnswer:
    """What ``triton_models/qu_student/1/model.py`` computes, in-process: lexicon tags, top-3 categories by cosine.

    ``prior_weight`` > 0 also orders categories by where the catalog files the tagged product type,
    as the model's ``category_prior_weight`` parameter does; ``spelling=False`` tags exact matches only.
    """
    if catalog.embeddings is None:
        raise PredictionError("the catalog has no category embeddings: import it with `qu catalog import`")
    if catalog.embeddings.model_id != embedder.model_id:
        raise PredictionError(
            f"the catalog's category vectors were made by {catalog.embeddings.model_id!r}, the embedder is "
            f"{embedder.model_id!r}: re-import the catalog or set QU_EMBEDDING_MODEL_ID/QU_EMBEDDING_MODEL_PATH"
        )
    tagger = LexiconTagger(catalog, spelling=spelling)
    version = f"{tagger.version}+{embedder.model_id}" + (f"+prior{prior_weight:g}" if prior_weight else "")

    def answer(normalized: list[str]) -> list[Understanding]:
        tags = [tagger.tag(q) for q in normalized]
        if not normalized:
            return []
        vectors = embedder.encode(normalized)
        categories = tagger.nearest_categories_batch(vectors, TOP_CATEGORIES, tags=tags, prior_weight=prior_weight)
        return [Understanding(t, c, version=version) for t, c in zip(tags, categories, strict=True)]

    return answer
