"""Batched, cached text embeddings for the guardrails.

The teacher checks thousands of queries, and the same query or rewrite text comes back
across tasks and runs: each distinct text is embedded once, and all the texts a batch
needs go to the model in one call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from services.embeddings import Vectors


class TextEncoder(Protocol):
    """What the guardrails need of an embedder (``services.embeddings.SentenceEmbedder`` is one).

    ``encode`` returns unit-length rows, so a dot product is the cosine similarity.
    """

    @property
    def model_id(self) -> str: ...

    def encode(self, texts: Sequence[str]) -> Vectors: ...


class EmbeddingCache:
    """Unit vectors by text, least recently used dropped past ``max_entries``."""

    def __init__(self, encoder: TextEncoder, max_entries: int = 200_000) -> None:
        self.encoder = encoder
        self.max_entries = max_entries
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self.encoded = 0  # texts sent to the model, for tests and run summaries

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def warm(self, texts: Sequence[str]) -> None:
        """Embed, in one model call, every text not cached yet."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if not missing:
            return
        vectors = self.encoder.encode(missing)
        self.encoded += len(missing)
        for text, vector in zip(missing, vectors, strict=True):
            self._vectors[text] = np.asarray(vector, dtype=np.float32)
        while len(self._vectors) > self.max_entries:
            self._vectors.popitem(last=False)

    def vector(self, text: str) -> Vectors:
        found = self._vectors.get(text)
        if found is None:
            self.warm([text])
            found = self._vectors[text]
        else:
            self._vectors.move_to_end(text)
        return found

    def matrix(self, texts: Sequence[str]) -> Vectors:
        """One row per text, embedding the missing ones in one call."""
        self.warm(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self.vector(t) for t in texts])
