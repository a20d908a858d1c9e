"""The sentence model's ONNX graph, exported once per model and kept: what the day-one student embeds with.

The day-one student (``qu_student`` version 1: the catalog lexicon plus category ranking by MiniLM)
embeds every missed query. Through sentence-transformers and torch that costs ~12 ms of one core for a
single query on this machine, through onnxruntime ~4.5 ms (docs/BENCHMARKS.md, the miss path): at
200 misses/s the difference is whether the deadline is met. The graph is derived from the installed
model, so it is cached under ``cache_dir`` by the model's id and its weights' size and mtime, and made
again when either changes; the export checks its vectors against sentence-transformers' first.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from services.embeddings import SentenceEmbedder
from services.student.export.onnx_export import export_embedding_graph

log = logging.getLogger(__name__)

# Queries of several lengths and kinds: the export's check embeds them both ways.
PROBE = (
    "organic whole milk",
    "bread no gluten",
    "x large zip lock bags",
    "ben and jerrys half baked ice cream 16 oz",
    "gluten free vegan chocolate chip cookies family size",
    "paper towels",
    "2% reduced fat milk half gallon",
    "fresh atlantic salmon fillet",
    "dish soap lemon",
    "a",
)


def embedding_graph_path(cache_dir: Path, model_path: Path, model_id: str) -> Path:
    """Where the graph of this model (as installed now) is kept."""
    weights = sorted(model_path.glob("*.safetensors")) or sorted(model_path.glob("*.bin"))
    stamp = "|".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights)
    digest = hashlib.sha256(f"{model_id}|{model_path.resolve()}|{stamp}".encode()).hexdigest()[:16]
    return cache_dir / f"{model_id.replace('/', '_')}-{digest}.onnx"


def ensure_embedding_graph(cache_dir: Path, model_path: Path, model_id: str) -> Path:
    """The cached graph of ``model_path``, exported (and checked) first when there is none."""
    path = embedding_graph_path(cache_dir, model_path, model_id)
    if not path.is_file():
        log.info("exporting %s to ONNX at %s (once per model)", model_path, path)
        reference = SentenceEmbedder(model_path, model_id=model_id)
        cosine = export_embedding_graph(model_path, path, PROBE, reference_embedder=reference)
        log.info("exported %s: smallest cosine to sentence-transformers %.6f", path, cosine)
    return path
