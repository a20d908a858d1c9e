"""The sentence model's ONNX graph the day-one student embeds with: the same vectors as sentence-transformers,
exported once per installed model, and an export whose vectors disagree leaves nothing behind."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from services.embeddings import SentenceEmbedder
from services.student.export.embedding_graph import PROBE, embedding_graph_path, ensure_embedding_graph
from services.student.export.onnx_export import ExportError, export_embedding_graph, sentence_max_tokens
from services.student.onnx_student import OnnxTextEmbedder

pytestmark = [pytest.mark.integration]


def test_the_graph_embeds_as_sentence_transformers_and_is_exported_once(
    embedder: SentenceEmbedder, tmp_path: Path
) -> None:
    graph = ensure_embedding_graph(tmp_path, embedder.model_path, embedder.model_id)
    made = graph.stat().st_mtime_ns
    assert ensure_embedding_graph(tmp_path, embedder.model_path, embedder.model_id) == graph
    assert graph.stat().st_mtime_ns == made  # kept, not exported again
    onnx = OnnxTextEmbedder(
        graph, embedder.model_path / "tokenizer.json", max_tokens=sentence_max_tokens(embedder.model_path)
    )
    queries = [*PROBE, "organic strawberries 1 lb", "ice cream"]
    cosines = np.sum(onnx.encode(queries) * embedder.encode(queries), axis=1)
    assert float(cosines.min()) > 0.9999
    assert onnx.encode([]).shape[0] == 0


def test_the_cache_key_follows_the_installed_weights(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    weights = model / "model.safetensors"
    weights.write_bytes(b"0" * 10)
    first = embedding_graph_path(tmp_path / "cache", model, "all-MiniLM-L6-v2")
    assert first == embedding_graph_path(tmp_path / "cache", model, "all-MiniLM-L6-v2")
    assert first != embedding_graph_path(tmp_path / "cache", model, "another-model")
    os.utime(weights, ns=(1, 1))  # reinstalled weights
    assert first != embedding_graph_path(tmp_path / "cache", model, "all-MiniLM-L6-v2")


class Disagreeing:
    """A reference embedder whose vectors are not the model's."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), 384), dtype=np.float32)
        vectors[:, 0] = 1.0
        return vectors


def test_an_export_whose_vectors_disagree_fails_and_leaves_nothing(embedder: SentenceEmbedder, tmp_path: Path) -> None:
    out = tmp_path / "graphs" / "minilm.onnx"
    with pytest.raises(ExportError, match="cosine"):
        export_embedding_graph(embedder.model_path, out, PROBE, reference_embedder=Disagreeing())
    assert list((tmp_path / "graphs").iterdir()) == []
