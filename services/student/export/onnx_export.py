"""From a training run to ONNX: merge the LoRA adapter, check it, export fp32, quantize to int8, check again.

Every step is checked against the step before it, loudly:

* merged vs adapter: the largest logit difference must stay under ``MERGE_TOLERANCE`` (merging
  is exact arithmetic up to float rounding, so anything larger is a bug, not noise);
* ONNX fp32 vs torch: under ``ONNX_TOLERANCE``, on batches padded to several lengths (the exporter
  traces one shape; this proves the graph is dynamic in batch and length);
* int8 vs fp32: quantization changes numbers, so the share of identical word labels is measured
  and reported; an export that serves int8 fails below ``INT8_MIN_AGREEMENT``.

The base MiniLM is exported too, with mean pooling and L2 norm inside the graph, so the serving
path ranks categories without torch; it is checked against the sentence-transformers embedder.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from services.errors import QuError
from services.student.bio import MAX_TOKENS, load_tokenizer, words

MERGE_TOLERANCE = 1e-4
ONNX_TOLERANCE = 1e-3
EMBED_MIN_COSINE = 0.9999
INT8_MIN_AGREEMENT = 0.95
OPSET = 17
_DYNAMIC = {0: "batch", 1: "tokens"}


class ExportError(QuError):
    """An export step produced something that does not match what it was made from."""


@dataclass(frozen=True, slots=True)
class Checks:
    merge_max_abs_diff: float
    onnx_fp32_max_abs_diff: float
    int8_label_agreement: float
    int8_max_abs_diff: float
    embedder_min_cosine_fp32: float
    embedder_min_cosine_int8: float
    probe_queries: int

    def to_json(self) -> dict[str, Any]:
        return {
            "merge_max_abs_diff": float(f"{self.merge_max_abs_diff:.3g}"),
            "onnx_fp32_max_abs_diff": float(f"{self.onnx_fp32_max_abs_diff:.3g}"),
            "int8_label_agreement": round(self.int8_label_agreement, 5),
            "int8_max_abs_diff": round(self.int8_max_abs_diff, 4),
            "embedder_min_cosine_fp32": round(self.embedder_min_cosine_fp32, 6),
            "embedder_min_cosine_int8": round(self.embedder_min_cosine_int8, 6),
            "probe_queries": self.probe_queries,
        }


@dataclass(frozen=True, slots=True)
class Graphs:
    tagger_fp32: Path
    tagger_int8: Path
    embedder_fp32: Path
    embedder_int8: Path
    checks: Checks


def _batches(texts: Sequence[str], size: int) -> list[list[str]]:
    # Odd sizes on purpose: the traced batch and length must not be the only ones that work.
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]


def _word_labels(logits: npt.NDArray[np.float32], encodings: Sequence[Any]) -> list[int]:
    return [int(np.argmax(logits[row, w.token])) for row, e in enumerate(encodings) for w in words(e)]


def _float64_logits(model: Any, tokenizer: Any, texts: Sequence[str]) -> npt.NDArray[np.float64]:
    encodings = tokenizer.encode_batch(list(texts))
    inputs = {
        "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
    }
    with torch.inference_mode():
        out: npt.NDArray[np.float64] = model(**inputs).logits.double().numpy()
    return out


def merged_student(base_model_path: Path, adapter_dir: Path, tokenizer: Any, probe: Sequence[str]) -> tuple[Any, float]:
    """The run's student with its adapter merged into the weights (float32), and the largest logit change
    merging made.

    The comparison runs in float64: in float32 the two computations round differently (logits of a
    trained student reach ~15, so rounding alone is ~1e-4), which would hide a small real error or
    fail a correct merge. In float64 a correct merge differs by ~1e-12.
    """
    from services.student.training.model import load_adapter

    model = load_adapter(base_model_path, adapter_dir).double()
    before = [_float64_logits(model, tokenizer, batch) for batch in _batches(probe, 29)]
    merged = model.merge_and_unload()
    merged.eval()
    after = [_float64_logits(merged, tokenizer, batch) for batch in _batches(probe, 29)]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(before, after, strict=True))
    if diff > MERGE_TOLERANCE:
        raise ExportError(
            f"merging the adapter of {adapter_dir} changed the logits by up to {diff:.3g} "
            f"(tolerance {MERGE_TOLERANCE:g}): the merged model is not the trained one"
        )
    return merged.float(), diff


class LogitsGraph(torch.nn.Module):
    """The token classifier as a graph of exactly (input_ids, attention_mask) -> logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # type: ignore[no-any-return]


class EmbeddingGraph(torch.nn.Module):
    """Base MiniLM + mean pooling over real tokens + L2 norm: what sentence-transformers computes with it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def _export(module: Any, tokenizer: Any, output: str, path: Path) -> None:
    encodings = tokenizer.encode_batch(["organic whole milk", "ben and jerrys ice cream 16 oz"])
    example = (
        torch.tensor([e.ids for e in encodings], dtype=torch.long),
        torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo; it is the one quantize_dynamic handles well.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={
                "input_ids": _DYNAMIC,
                "attention_mask": _DYNAMIC,
                output: _DYNAMIC if output == "logits" else {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def quantize(fp32: Path, int8: Path) -> None:
    """Dynamic int8 (weights int8 per output channel, activations quantized at run time), after ORT's pre-processing.

    Per-channel weights: on a 2-epoch student they kept 97.5% of word labels (QueryNER validation F1 0.653
    vs fp32 0.659), per-tensor weights 95.2% (F1 0.643).
    """
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=int8.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(int8), weight_type=QuantType.QInt8, per_channel=True)


def _load_base_encoder(model_path: Path) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_path))
    model.eval()
    return model


def export_graphs(
    base_model_path: Path,
    adapter_dir: Path,
    tokenizer_path: Path,
    out_dir: Path,
    probe: Sequence[str],
    *,
    reference_embedder: Any | None = None,
    max_tokens: int = MAX_TOKENS,
    int8_min_agreement: float | None = INT8_MIN_AGREEMENT,
) -> Graphs:
    """Merge, export and quantize the tagger and the base embedder into ``out_dir``; every check passed or raised.

    ``probe`` are normalized queries the checks run on (the run's held-out queries); ``reference_embedder``
    (a ``SentenceEmbedder``) is what the embedder graph must agree with. ``int8_min_agreement`` None
    only measures the int8 tagger's agreement (when fp32 is what will serve).
    """
    from services.student.onnx_student import OnnxTagger

    if not probe:
        raise ExportError("no probe queries to check the export on: the run has no held-out examples")
    tokenizer = load_tokenizer(tokenizer_path, max_tokens)
    with torch.inference_mode():
        merged, merge_diff = merged_student(base_model_path, adapter_dir, tokenizer, probe)
    graphs = Graphs(
        out_dir / "tagger.fp32.onnx",
        out_dir / "tagger.int8.onnx",
        out_dir / "embedder.fp32.onnx",
        out_dir / "embedder.int8.onnx",
        Checks(0, 0, 0, 0, 0, 0, 0),
    )
    _export(LogitsGraph(merged).eval(), tokenizer, "logits", graphs.tagger_fp32)
    quantize(graphs.tagger_fp32, graphs.tagger_int8)
    _export(EmbeddingGraph(_load_base_encoder(base_model_path)).eval(), tokenizer, "embedding", graphs.embedder_fp32)
    quantize(graphs.embedder_fp32, graphs.embedder_int8)

    from services.student.training.model import logits as torch_logits

    fp32 = OnnxTagger(graphs.tagger_fp32, tokenizer_path, max_tokens=max_tokens, threads=0)
    int8 = OnnxTagger(graphs.tagger_int8, tokenizer_path, max_tokens=max_tokens, threads=0)
    onnx_diff = int8_diff = 0.0
    agree = total = 0
    for batch in _batches(probe, 29):
        reference, encodings = torch_logits(merged, tokenizer, batch)
        got = fp32.logits(encodings)
        quantized = int8.logits(encodings)
        onnx_diff = max(onnx_diff, float(np.abs(got - reference).max()))
        int8_diff = max(int8_diff, float(np.abs(quantized - reference).max()))
        expected = _word_labels(reference, encodings)
        agree += sum(a == b for a, b in zip(expected, _word_labels(quantized, encodings), strict=True))
        total += len(expected)
    if onnx_diff > ONNX_TOLERANCE:
        raise ExportError(
            f"the fp32 ONNX tagger differs from torch by up to {onnx_diff:.3g} (tolerance {ONNX_TOLERANCE:g})"
        )
    agreement = agree / total if total else 1.0
    if int8_min_agreement is not None and agreement < int8_min_agreement:
        raise ExportError(
            f"the int8 tagger labels only {agreement:.2%} of words as fp32 does (minimum {int8_min_agreement:.0%}): "
            "serve fp32 (--precision fp32) or train longer"
        )
    cosines = _embedder_cosines(graphs, tokenizer, probe, reference_embedder)
    if cosines[0] < EMBED_MIN_COSINE:
        raise ExportError(
            f"the fp32 ONNX embedder's vectors reach only cosine {cosines[0]:.6f} with sentence-transformers' "
            f"(minimum {EMBED_MIN_COSINE}): the category ranking would change"
        )
    checks = Checks(merge_diff, onnx_diff, agreement, int8_diff, cosines[0], cosines[1], len(probe))
    return Graphs(graphs.tagger_fp32, graphs.tagger_int8, graphs.embedder_fp32, graphs.embedder_int8, checks)


def _embedder_cosines(
    graphs: Graphs, tokenizer: Any, probe: Sequence[str], reference_embedder: Any | None
) -> tuple[float, float]:
    """The smallest cosine between the reference vectors and the fp32 / int8 graphs' (1.0 without a reference)."""

    if reference_embedder is None:
        return 1.0, 1.0
    texts = list(probe[:256])
    reference = np.asarray(reference_embedder.encode(texts), dtype=np.float32)
    fp32, int8 = (
        _smallest_cosine(path, tokenizer, texts, reference) for path in (graphs.embedder_fp32, graphs.embedder_int8)
    )
    return fp32, int8


def _smallest_cosine(graph: Path, tokenizer: Any, texts: Sequence[str], reference: npt.NDArray[np.float32]) -> float:
    """The smallest cosine between ``graph``'s vectors of ``texts`` and ``reference`` (unit rows, one per text)."""
    from services.student.onnx_student import OnnxEmbedder

    embedder = OnnxEmbedder(graph, threads=0)
    vectors = np.concatenate([embedder.encode(tokenizer.encode_batch(b)) for b in _batches(texts, 29)])
    return float(np.min(np.sum(vectors * reference, axis=1)))


def sentence_max_tokens(model_path: Path) -> int:
    """The sentence-transformers model's own truncation (``sentence_bert_config.json``), so the graph fed by our
    tokenizer sees the same tokens as the reference; 256 (MiniLM's) where the file does not say."""
    config = model_path / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256))
    return 256


def export_embedding_graph(model_path: Path, out: Path, probe: Sequence[str], *, reference_embedder: Any) -> float:
    """The base sentence model (``model_path``, with its ``tokenizer.json``) as one ONNX graph with mean pooling and
    L2 norm inside, written to ``out`` whole or not at all; returns the smallest cosine to ``reference_embedder``'s
    vectors over ``probe``, and raises :class:`ExportError` under ``EMBED_MIN_COSINE``."""

    tokenizer_path = model_path / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise ExportError(f"no tokenizer.json in {model_path}: the embedding graph needs the model's fast tokenizer")
    tokenizer = load_tokenizer(tokenizer_path, sentence_max_tokens(model_path))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        staged = Path(tmp) / out.name
        with torch.inference_mode():
            _export(EmbeddingGraph(_load_base_encoder(model_path)).eval(), tokenizer, "embedding", staged)
        texts = list(probe[:256])
        reference = np.asarray(reference_embedder.encode(texts), dtype=np.float32)
        cosine = _smallest_cosine(staged, tokenizer, texts, reference)
        if cosine < EMBED_MIN_COSINE:
            raise ExportError(
                f"the ONNX graph of {model_path} reaches only cosine {cosine:.6f} with sentence-transformers' vectors "
                f"(minimum {EMBED_MIN_COSINE}): the category ranking would change"
            )
        staged.replace(out)
    return cosine
