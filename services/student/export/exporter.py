"""``qu student export RUN_DIR``: graphs, checks, scores, timings, and a new ``qu_student`` version.

Writes ``RUN_DIR/onnx/`` (both precisions), ``RUN_DIR/export.json`` (every figure below) and a
version directory (model.py, student.json, tokenizer.json, the graphs that serve, MODEL_CARD.md)
installed as the next version of ``qu_student``.

``precision`` picks the tagger graph (it names the version); the query embedder is fp32 unless
asked otherwise, because dynamic int8 moves the sentence vectors enough to reorder categories
(measured at export: ``int8_embedder_categories``), while the tagger's labels barely change.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson

from services.errors import QuError
from services.student.bio import LABELS, MAX_TOKENS, load_tokenizer
from services.student.export.model_card import model_card
from services.student.export.onnx_export import INT8_MIN_AGREEMENT, Graphs, export_graphs
from services.student.export.publish import TEMPLATE, link_or_copy, planned_version, publish
from services.student.onnx_student import MANIFEST, Manifest, OnnxEmbedder, OnnxTagger
from services.student.training.data import Example, read_examples
from services.student.training.scoring import span_scores

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")
MODEL_NAME = "student-minilm-lora"
LATENCY_QUERIES = 300
Report = Callable[[str], None]


class RunDirError(QuError):
    """RUN_DIR is not a finished ``qu student train`` run."""


def version_string(run_id: str, precision: str, embedder_precision: str = "fp32") -> str:
    """``student-minilm-lora.<run_id>.<tagger precision>``, plus ``.embed-int8`` when the query embedder is int8."""
    suffix = "" if embedder_precision == "fp32" else f".embed-{embedder_precision}"
    return f"{MODEL_NAME}.{run_id}.{precision}{suffix}"


@dataclass(frozen=True, slots=True)
class Run:
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    heldout: dict[str, list[Example]]

    @property
    def run_id(self) -> str:
        return str(self.config["run_id"])

    @classmethod
    def read(cls, path: Path) -> Run:
        for name in ("config.json", "metrics.json", "adapter/adapter_config.json", "tokenizer/tokenizer.json"):
            if not (path / name).is_file():
                raise RunDirError(f"{path} is not a student run: {name} is missing (train one with `qu student train`)")
        config = orjson.loads((path / "config.json").read_bytes())
        if tuple(config.get("labels", ())) != LABELS:
            raise RunDirError(f"{path}: trained with labels {config.get('labels')}, this code has {list(LABELS)}")
        heldout = {
            name: read_examples(path / "heldout" / f"{name}.jsonl")
            for name in ("heldout", "queryner_validation")
            if (path / "heldout" / f"{name}.jsonl").is_file()
        }
        return cls(path, config, orjson.loads((path / "metrics.json").read_bytes()), heldout)


def _percentile_ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3)


def measure_latency(tagger: OnnxTagger, embedder: OnnxEmbedder, queries: Sequence[str]) -> dict[str, float]:
    """In-process time per query at batch 1, one intra-op thread (as served): tags alone, tags + query vector."""
    for q in queries[:20]:  # warm-up: first runs allocate
        tagger.tags([q])
    tag_only: list[float] = []
    both: list[float] = []
    for q in queries:
        start = time.perf_counter()
        encodings = tagger.encode([q])
        tagger.tags([q], encodings)
        middle = time.perf_counter()
        embedder.encode(encodings)
        end = time.perf_counter()
        tag_only.append(middle - start)
        both.append(end - start)
    return {
        "queries": len(queries),
        "tagger_p50_ms": _percentile_ms(tag_only, 50),
        "tagger_p99_ms": _percentile_ms(tag_only, 99),
        "tagger_embedder_p50_ms": _percentile_ms(both, 50),
        "tagger_embedder_p99_ms": _percentile_ms(both, 99),
    }


def category_agreement(
    graphs: Graphs, tokenizer_path: Path, max_tokens: int, catalog_dir: Path, queries: Sequence[str]
) -> dict[str, float]:
    """Share of ``queries`` whose top-1 / top-3 category paths are the same with the int8 embedder as with fp32."""
    from services.catalog.artifacts import load_catalog
    from services.tagging import LexiconTagger

    index = LexiconTagger(load_catalog(catalog_dir))
    tokenizer = load_tokenizer(tokenizer_path, max_tokens)
    ranked = []
    for path in (graphs.embedder_fp32, graphs.embedder_int8):
        embedder = OnnxEmbedder(path, threads=0)
        vectors = np.concatenate(
            [embedder.encode(tokenizer.encode_batch(list(queries[i : i + 64]))) for i in range(0, len(queries), 64)]
        )
        ranked.append([[c.path for c in row] for row in index.nearest_categories_batch(vectors, 3)])
    pairs = list(zip(*ranked, strict=True))
    return {
        "queries": len(pairs),
        "top1_same": round(sum(a[0] == b[0] for a, b in pairs) / len(pairs), 4),
        "top3_same": round(sum(a == b for a, b in pairs) / len(pairs), 4),
    }


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 2**20, 1)


def _graph_files(graphs: Graphs, precision: Precision) -> tuple[Path, Path]:
    if precision == "fp32":
        return graphs.tagger_fp32, graphs.embedder_fp32
    return graphs.tagger_int8, graphs.embedder_int8


def export_run(
    run_dir: Path,
    *,
    base_model_path: Path,
    embedding_model_id: str,
    reference_embedder: Any | None,
    precision: Precision,
    embedder_precision: Precision = "fp32",
    state_dir: Path,
    repository: Path,
    catalog_dir: Path | None = None,
    report: Report = lambda _message: None,
) -> dict[str, Any]:
    """Export ``run_dir`` and install it as the next ``qu_student`` version; returns the export record.

    With ``catalog_dir`` (an imported catalog with embeddings) the record also says how often the int8
    embedder ranks the same categories as the fp32 one.
    """
    run = Run.read(run_dir)
    max_tokens = int(run.config.get("max_tokens", MAX_TOKENS))
    version_number = planned_version(state_dir, repository)  # fails early when the repository is wrong
    probe = [e.text for examples in run.heldout.values() for e in examples]
    tokenizer_path = run_dir / "tokenizer" / "tokenizer.json"
    report(f"export: merging the adapter and exporting ONNX (checks on {len(probe)} held-out queries)")
    graphs = export_graphs(
        base_model_path,
        run_dir / "adapter",
        tokenizer_path,
        run_dir / "onnx",
        probe,
        reference_embedder=reference_embedder,
        max_tokens=max_tokens,
        int8_min_agreement=INT8_MIN_AGREEMENT if precision == "int8" else None,
    )
    report(f"export: checks passed {graphs.checks.to_json()}")

    scores: dict[str, dict[str, Any]] = {}
    latency: dict[str, dict[str, float]] = {}
    for p in PRECISIONS:
        tagger_path, embedder_path = _graph_files(graphs, p)
        tagger = OnnxTagger(tagger_path, tokenizer_path, max_tokens=max_tokens, threads=1)
        scores[p] = {
            name: span_scores([list(e.spans) for e in examples], tagger.tags([e.text for e in examples]))
            for name, examples in run.heldout.items()
            if examples
        }
        latency[p] = measure_latency(tagger, OnnxEmbedder(embedder_path, threads=1), probe[:LATENCY_QUERIES])
        report(f"export: {p}: " + ", ".join(f"{n} F1 {s['f1']}" for n, s in scores[p].items()) + f"; {latency[p]}")

    if catalog_dir is not None:
        record_categories = category_agreement(graphs, tokenizer_path, max_tokens, catalog_dir, probe)
        report(f"export: int8 vs fp32 embedder categories: {record_categories}")
    else:
        record_categories = {}
    sizes = {
        "adapter_mb": _mb(run_dir / "adapter" / "adapter_model.safetensors"),
        **{f"{path.stem.replace('.', '_')}_mb": _mb(path) for path in _graph_files(graphs, "fp32")},
        **{f"{path.stem.replace('.', '_')}_mb": _mb(path) for path in _graph_files(graphs, "int8")},
    }
    version = version_string(run.run_id, precision, embedder_precision)
    manifest = Manifest(
        version=version,
        precision=precision,
        labels=LABELS,
        max_tokens=max_tokens,
        tagger="tagger.onnx",
        embedder="embedder.onnx",
        tokenizer="tokenizer.json",
        embedding_model_id=embedding_model_id,
        run_id=run.run_id,
        embedder_precision=embedder_precision,
    )
    record: dict[str, Any] = {
        "version": version,
        "triton_version": version_number,
        "precision": precision,
        "embedder_precision": embedder_precision,
        "run_id": run.run_id,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "checks": graphs.checks.to_json(),
        "scores": scores,
        "training_scores": {n: run.metrics[n] for n in run.heldout if n in run.metrics},
        "latency_in_process": latency,
        "int8_embedder_categories": record_categories,
        "sizes": sizes,
    }
    source = run_dir / f"version-{precision}"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir()
    tagger_path = _graph_files(graphs, precision)[0]
    embedder_path = _graph_files(graphs, embedder_precision)[1]
    link_or_copy(str(tagger_path), str(source / manifest.tagger))
    link_or_copy(str(embedder_path), str(source / manifest.embedder))
    shutil.copy2(tokenizer_path, source / manifest.tokenizer)
    shutil.copy2(TEMPLATE, source / "model.py")
    (source / MANIFEST).write_bytes(orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2))
    (source / "MODEL_CARD.md").write_text(model_card(record, run.config, run.metrics), encoding="utf-8")
    installed = publish(source, version_number, state_dir, repository)
    shutil.rmtree(source)  # the installed copies are the version now
    record["version_dir"] = str(installed)
    (run_dir / "export.json").write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    report(f"export: {version} installed as {installed}")
    return record
