"""The exported student at serving time: two ONNX graphs under onnxruntime, no torch.

A ``qu_student`` version directory written by ``qu student export`` holds:

* ``student.json``  the manifest (version string, labels, graph files, tokenizer, embedding model id);
* ``tagger.onnx``   the merged LoRA student: ``input_ids``, ``attention_mask`` -> per-token label logits;
* ``embedder.onnx`` the base MiniLM with mean pooling and L2 norm: the same inputs -> unit sentence vectors,
  ranked against the catalog's category embeddings exactly as version 1 ranks them;
* ``tokenizer.json``, ``model.py`` (the Triton entry, a thin shell over :class:`OnnxStudent`) and MODEL_CARD.md.

Both graphs run with one intra-op thread each (one Triton instance must not take every core
from the Faust workers beside it); they run side by side, the embedder on a helper thread, since
onnxruntime releases the GIL while it computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from tokenizers import Encoding

from services.domain import Tag, Understanding
from services.errors import QuError
from services.student.bio import LABELS, decode_spans, load_tokenizer, softmax
from services.student.contract import decode_query

MANIFEST = "student.json"
TOP_CATEGORIES = 3


class StudentModelError(QuError):
    """A student version directory is incomplete or does not match this code (labels, catalog)."""


@dataclass(frozen=True, slots=True)
class Manifest:
    version: str
    precision: str
    labels: tuple[str, ...]
    max_tokens: int
    tagger: str
    embedder: str
    tokenizer: str
    embedding_model_id: str
    run_id: str
    embedder_precision: str = "fp32"

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        try:
            row = orjson.loads(path.read_bytes())
            manifest = cls(
                version=str(row["version"]),
                precision=str(row["precision"]),
                labels=tuple(str(label) for label in row["labels"]),
                max_tokens=int(row["max_tokens"]),
                tagger=str(row["tagger"]),
                embedder=str(row["embedder"]),
                tokenizer=str(row["tokenizer"]),
                embedding_model_id=str(row["embedding_model_id"]),
                run_id=str(row["run_id"]),
                embedder_precision=str(row.get("embedder_precision", "fp32")),
            )
        except OSError as err:
            raise StudentModelError(f"{path}: cannot read the student manifest ({err})") from err
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise StudentModelError(f"{path}: not a student manifest ({type(err).__name__}: {err})") from err
        if manifest.labels != LABELS:
            raise StudentModelError(f"{path}: labels {manifest.labels} are not this code's {LABELS}: re-export the run")
        return manifest

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "precision": self.precision,
            "labels": list(self.labels),
            "max_tokens": self.max_tokens,
            "tagger": self.tagger,
            "embedder": self.embedder,
            "tokenizer": self.tokenizer,
            "embedding_model_id": self.embedding_model_id,
            "run_id": self.run_id,
            "embedder_precision": self.embedder_precision,
        }


def session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    if not path.is_file():
        raise StudentModelError(f"no ONNX graph at {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(encodings: Sequence[Encoding]) -> dict[str, npt.NDArray[np.int64]]:
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


class OnnxTagger:
    """Tags normalized queries with an exported tagger graph (no catalog needed: export scores with it)."""

    def __init__(self, graph: Path, tokenizer: Path, *, max_tokens: int, threads: int = 1) -> None:
        self.session = session(graph, threads)
        self.tokenizer = load_tokenizer(tokenizer, max_tokens)

    def encode(self, queries: Sequence[str]) -> list[Encoding]:
        return list(self.tokenizer.encode_batch(list(queries)))

    def logits(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        out = self.session.run(["logits"], _feeds(encodings))[0]
        return np.asarray(out, dtype=np.float32)

    def tags(self, queries: Sequence[str], encodings: Sequence[Encoding] | None = None) -> list[list[Tag]]:
        if not queries:
            return []
        encodings = encodings if encodings is not None else self.encode(queries)
        probabilities = softmax(self.logits(encodings))
        return [decode_spans(q, e, p) for q, e, p in zip(queries, encodings, probabilities, strict=True)]


class OnnxEmbedder:
    """Unit sentence vectors from the exported base-MiniLM graph (mean pooling and L2 norm are in the graph)."""

    def __init__(self, graph: Path, threads: int = 1) -> None:
        self.session = session(graph, threads)

    def encode(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        out = self.session.run(["embedding"], _feeds(encodings))[0]
        return np.asarray(out, dtype=np.float32)


class OnnxTextEmbedder:
    """Texts in, unit vectors out: the sentence model's own tokenizer and its exported graph
    (:func:`services.student.export.onnx_export.export_embedding_graph`), the same vectors as
    sentence-transformers' (checked at export) for a third of the CPU on one query."""

    def __init__(self, graph: Path, tokenizer: Path, *, max_tokens: int, threads: int = 1) -> None:
        self.embedder = OnnxEmbedder(graph, threads)
        self.tokenizer = load_tokenizer(tokenizer, max_tokens)

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return self.embedder.encode(self.tokenizer.encode_batch(list(texts)))


class OnnxStudent:
    """``understand(queries)``: tags and category paths for normalized queries, as the Triton model answers."""

    def __init__(self, version_dir: Path, catalog_dir: Path, *, threads: int = 1) -> None:
        from services.catalog.artifacts import load_catalog
        from services.tagging import LexiconTagger

        self.manifest = Manifest.read(version_dir)
        self.version = self.manifest.version
        catalog = load_catalog(catalog_dir)
        if catalog.embeddings is None:
            raise StudentModelError(
                f"the catalog in {catalog_dir} has no embeddings: import it with `qu catalog import`"
            )
        if catalog.embeddings.model_id != self.manifest.embedding_model_id:
            raise StudentModelError(
                f"the catalog's category vectors were made by {catalog.embeddings.model_id!r}, this student embeds "
                f"queries with {self.manifest.embedding_model_id!r}: re-import the catalog or re-export the student"
            )
        # The lexicon tagger is the catalog's category index here and names what the student's spans are
        # in the catalog; the student makes the tags.
        self.categories = LexiconTagger(catalog)
        self.tagger = OnnxTagger(
            version_dir / self.manifest.tagger,
            version_dir / self.manifest.tokenizer,
            max_tokens=self.manifest.max_tokens,
            threads=threads,
        )
        self.embedder = OnnxEmbedder(version_dir / self.manifest.embedder, threads)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qu-student-embed")
        self.understand(["warm up"])  # a broken graph fails the model load, not the first request

    def understand(self, queries: Sequence[str]) -> list[Understanding]:
        if not queries:
            return []
        encodings = self.tagger.encode(queries)
        vectors = self._pool.submit(self.embedder.encode, encodings)
        tags = [[self._catalog_value(t) for t in query_tags] for query_tags in self.tagger.tags(queries, encodings)]
        categories = self.categories.nearest_categories_batch(vectors.result(), TOP_CATEGORIES)
        return [Understanding(t, c, version=self.version) for t, c in zip(tags, categories, strict=True)]

    def _catalog_value(self, tag: Tag) -> Tag:
        """The tag with the catalog's canonical value of its span where the catalog has one: the student
        learnt to tag "bananna" from a teacher that read it as "banana", and says the span, not the value."""
        canonical = self.categories.canonical(tag.role, tag.text)
        return replace(tag, canonical=canonical) if canonical is not None and canonical != tag.canonical else tag

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def answer_batches(student: OnnxStudent, batches: Sequence[Sequence[object]]) -> list[list[bytes] | ValueError]:
    """Per request: its answers (``Understanding`` JSON, UTF-8) or the ValueError that rejects it.

    Valid requests share one pass through the graphs; a bad request fails alone.
    """
    decoded: list[list[str] | ValueError] = []
    for elements in batches:
        try:
            decoded.append([decode_query(i, raw) for i, raw in enumerate(elements)])
        except ValueError as err:
            decoded.append(err)
    flat = [q for item in decoded if isinstance(item, list) for q in item]
    answers = iter(student.understand(flat))
    return [
        item if isinstance(item, ValueError) else [orjson.dumps(next(answers).to_json()) for _ in item]
        for item in decoded
    ]
