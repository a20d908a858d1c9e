"""qu_student, version 1: the catalog-lexicon tagger plus MiniLM category ranking, behind the student contract.

Contract (config.pbtxt): ``QUERY`` is a batch of normalized queries (UTF-8 bytes, shape [n, 1]);
``TAGS_JSON`` is, per query, ``Understanding.to_json()`` as UTF-8 JSON: tags from
``services.tagging.LexiconTagger`` (offsets into the query), ``categories`` = the 3 catalog category
paths whose stored embeddings are most cosine-similar to the query's MiniLM embedding, best first,
``score`` = that cosine similarity (the caller applies the guardrail threshold), ``rewrites`` = []
and ``version`` = ``catalog-lexicon-v2+catalog.<build id>+<embedding model id>``.

Optional config parameter ``category_prior_weight`` (default 0: cosine order, as above) also orders
categories by where the catalog puts the tagged product type (``LexiconTagger.nearest_categories_batch``);
the version then ends ``+prior<weight>``.

This is not a learned model: it is named as the tagger it is, so annotations never claim a
student made them. The Triton Python backend stub runs the venv's python (first on PATH), where
the project is installed, so the engine's own ``services`` package does the work.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
import triton_python_backend_utils as pb_utils  # provided by the Python backend stub at run time

from services.catalog.artifacts import load_catalog
from services.domain import Understanding
from services.embeddings import SentenceEmbedder
from services.student.contract import decode_query
from services.student.export.onnx_export import sentence_max_tokens
from services.student.onnx_student import OnnxTextEmbedder
from services.tagging import LexiconTagger

TOP_CATEGORIES = 3
EMBED_BATCH = 64  # config.pbtxt max_batch_size: one model pass per request at most
# torch's intra-op threads when the environment does not say (OMP_NUM_THREADS): one per model instance. A MiniLM
# pass over a few queries gains little from more, and on a small machine torch's spinning worker threads take the
# cores the broker and the worker need: 200 misses/s alone measured p99 253 ms with torch's default, 81 ms with one.
# Scale with instances (config.pbtxt instance_group) rather than threads.
DEFAULT_INTRA_OP_THREADS = 1
MATERIALIZE_HINT = (
    "materialize the repository with services.stack.model_repository.materialize_model_repository, "
    "which writes the machine's paths into config.pbtxt"
)


def _parameter_path(parameters: dict[str, Any], name: str) -> Path:
    value = str(parameters.get(name, {}).get("string_value", "")).strip()
    if not value:
        raise ValueError(f"qu_student: model config parameter {name!r} is missing or empty: {MATERIALIZE_HINT}")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"qu_student: parameter {name}={value} does not exist: {MATERIALIZE_HINT}")
    return path


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(DEFAULT_INTRA_OP_THREADS)
        config = json.loads(args["model_config"])
        parameters: dict[str, Any] = config.get("parameters", {})
        catalog_dir = _parameter_path(parameters, "catalog_dir")
        model_path = _parameter_path(parameters, "embedding_model_path")
        catalog = load_catalog(catalog_dir)
        if catalog.embeddings is None:
            raise ValueError(
                f"qu_student: the catalog in {catalog_dir} has no embeddings: import it with `qu catalog import`"
            )
        model_id = catalog.embeddings.model_id
        expected = str(parameters.get("embedding_model_id", {}).get("string_value", "")).strip()
        if expected and expected != model_id:
            raise ValueError(
                f"qu_student: the catalog's category vectors were made by {model_id!r}, the configured model is "
                f"{expected!r}: re-import the catalog with that model or point embedding_model_path at {model_id}"
            )
        self.tagger = LexiconTagger(catalog).warm()  # its spelling indexes built before the first request
        self.embedder: OnnxTextEmbedder | SentenceEmbedder
        graph = str(parameters.get("embedding_graph", {}).get("string_value", "")).strip()
        if graph:
            # The same vectors for a third of the CPU per query (services/student/export/embedding_graph.py).
            self.embedder = OnnxTextEmbedder(
                _parameter_path(parameters, "embedding_graph"),
                model_path / "tokenizer.json",
                max_tokens=sentence_max_tokens(model_path),
                threads=int(os.environ.get("OMP_NUM_THREADS", DEFAULT_INTRA_OP_THREADS)),
            )
        else:
            self.embedder = SentenceEmbedder(model_path, model_id=model_id, batch_size=EMBED_BATCH)
        # Load the weights now: a bad model path fails the model load, not the first request.
        self.embedder.encode(["warm up"])
        self.prior_weight = float(parameters.get("category_prior_weight", {}).get("string_value", "") or 0.0)
        self.version = f"{self.tagger.version}+{model_id}" + (
            f"+prior{self.prior_weight:g}" if self.prior_weight else ""
        )
        pb_utils.Logger.log_info(
            f"qu_student {args.get('model_version', '?')}: {self.version}, "
            f"{len(catalog.embeddings.categories.keys)} category paths, catalog {catalog_dir}, model {model_path}"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        # Decode every request first: a bad one gets its own error, the rest share one embedding pass.
        decoded: list[list[str] | str] = []
        for request in requests:
            elements = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            try:
                decoded.append([decode_query(i, raw) for i, raw in enumerate(elements)])
            except ValueError as err:
                decoded.append(str(err))
        flat = [q for item in decoded if isinstance(item, list) for q in item]
        try:
            tags = [self.tagger.tag(q) for q in flat]
            vectors = self.embedder.encode(flat)
            categories = self.tagger.nearest_categories_batch(
                vectors, TOP_CATEGORIES, tags=tags, prior_weight=self.prior_weight
            )
        except Exception as err:  # the whole batch failed: every request still gets its own response
            message = f"qu_student could not answer {len(flat)} queries: {err}"
            return [
                _error(item, pb_utils.TritonError.INVALID_ARG)
                if isinstance(item, str)
                else _error(message, pb_utils.TritonError.INTERNAL)
                for item in decoded
            ]
        responses = []
        position = 0
        for item in decoded:
            if isinstance(item, str):
                responses.append(_error(item, pb_utils.TritonError.INVALID_ARG))
                continue
            answers = [
                orjson.dumps(Understanding(tags[j], categories[j], version=self.version).to_json())
                for j in range(position, position + len(item))
            ]
            tensor = np.array(answers, dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TAGS_JSON", tensor)]))
            position += len(item)
        return responses

    def finalize(self) -> None:
        pb_utils.Logger.log_info(f"qu_student unloaded ({getattr(self, 'version', 'never initialized')})")


def _error(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
