"""Train a few steps -> run directory; merge -> same logits; ONNX fp32 -> torch's logits; int8 -> mostly the same
labels; the version directory serves ``Understanding`` JSON through :class:`OnnxStudent`, without Triton.

The run and its export are session fixtures (tests/fixtures/student.py): made once, read here.
"""

from __future__ import annotations

import filecmp
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from services.catalog.artifacts import load_catalog
from services.domain import Role, Tag
from services.embeddings import SentenceEmbedder
from services.normalize import normalize_query
from services.settings import Settings
from services.student.bio import load_tokenizer
from services.student.export.publish import (
    STUDENT_MODEL,
    TEMPLATE,
    next_version,
    published_store,
    restore_published_versions,
)
from services.student.onnx_student import OnnxStudent, OnnxTagger, answer_batches
from services.student.training.model import load_adapter, logits
from services.student.training.trainer import TrainResult
from services.tagging import LexiconTagger
from tests.conftest import Cli
from tests.fixtures.student import bare_repository, tiny_gold

pytestmark = [pytest.mark.slow]

# Queries of other lengths than anything the graphs were traced or checked with.
NEW_QUERIES = ["milk", "blue hill organic greek yogurt by acme", "happy farms low fat bananas", "cheap pasta"]


def test_a_few_training_steps_write_the_run_directory(student_run: TrainResult) -> None:
    run = student_run.run_dir
    for name in (
        "config.json", "metrics.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors",
        "tokenizer/tokenizer.json", "heldout/heldout.jsonl", "heldout/queryner_validation.jsonl",
    ):  # fmt: skip
        assert (run / name).is_file(), name
    config = orjson.loads((run / "config.json").read_bytes())
    assert (config["run_id"], config["lora_r"], config["seed"]) == ("tiny", 4, 7)
    metrics = orjson.loads((run / "metrics.json").read_bytes())
    assert metrics["steps"] == 40 and metrics["history"][-1]["steps"] == 40
    for name in ("heldout", "queryner_validation"):
        assert set(metrics[name]["per_role"]) == {"product", "brand", "attribute"}
    # 40 steps overfit the tiny grammar: the held-out combinations of its words are tagged right.
    assert metrics["heldout"]["f1"] >= 0.8


def test_merged_weights_give_the_adapter_s_logits(student_run: TrainResult) -> None:
    tokenizer = load_tokenizer(student_run.run_dir / "tokenizer" / "tokenizer.json")
    model = load_adapter(Settings().resolved_embedding_model_path(), student_run.run_dir / "adapter")
    before, _ = logits(model, tokenizer, NEW_QUERIES)
    after, _ = logits(model.merge_and_unload(), tokenizer, NEW_QUERIES)
    assert np.abs(before - after).max() <= 1e-4


def test_the_export_checks_passed_and_are_recorded(student_export: dict[str, Any]) -> None:
    checks = student_export["checks"]
    assert checks["merge_max_abs_diff"] <= 1e-4
    assert checks["onnx_fp32_max_abs_diff"] <= 1e-3
    assert checks["int8_label_agreement"] >= 0.95
    assert checks["embedder_min_cosine_fp32"] >= 0.9999
    assert set(student_export["scores"]) == {"fp32", "int8"}
    assert student_export["latency_in_process"]["int8"]["tagger_p50_ms"] > 0
    categories = student_export["int8_embedder_categories"]
    assert categories["queries"] == checks["probe_queries"]
    assert 0 <= categories["top3_same"] <= categories["top1_same"] <= 1


def test_onnx_fp32_logits_match_torch_and_int8_labels_mostly_agree(student_run: TrainResult) -> None:
    run = student_run.run_dir
    tokenizer_path = run / "tokenizer" / "tokenizer.json"
    merged = load_adapter(Settings().resolved_embedding_model_path(), run / "adapter").merge_and_unload()
    fp32 = OnnxTagger(run / "onnx" / "tagger.fp32.onnx", tokenizer_path, max_tokens=128)
    int8 = OnnxTagger(run / "onnx" / "tagger.int8.onnx", tokenizer_path, max_tokens=128)
    for batch in (NEW_QUERIES, NEW_QUERIES[:1], NEW_QUERIES[1:3]):
        reference, encodings = logits(merged, load_tokenizer(tokenizer_path), batch)
        assert np.abs(fp32.logits(encodings) - reference).max() <= 1e-3
    queries = [e["query"] for e in map(orjson.loads, (run / "heldout" / "heldout.jsonl").read_bytes().splitlines())]
    queries += NEW_QUERIES

    def spans(tags: list[Any]) -> list[tuple[Role, int, int]]:
        return [(t.role, t.start, t.end) for t in tags]  # confidences differ a little, by design

    same = sum(spans(a) == spans(b) for a, b in zip(fp32.tags(queries), int8.tags(queries), strict=True))
    assert same / len(queries) >= 0.9


def test_the_version_directory_is_complete_and_published(student_export: dict[str, Any]) -> None:
    version_dir = Path(student_export["version_dir"])
    assert version_dir.name == "2" and version_dir.parent.name == STUDENT_MODEL
    assert student_export["version"] == "student-minilm-lora.tiny.int8"
    manifest = orjson.loads((version_dir / "student.json").read_bytes())
    assert (manifest["version"], manifest["precision"], manifest["run_id"]) == (
        student_export["version"],
        "int8",
        "tiny",
    )
    assert filecmp.cmp(version_dir / "model.py", TEMPLATE, shallow=False)
    card = (version_dir / "MODEL_CARD.md").read_text()
    assert student_export["version"] in card and "QueryNER" in card and "int8" in card
    # The durable copy that a stack restart restores, and the next number after it.
    state_dir = version_dir.parents[2] / "state"
    assert (published_store(state_dir) / "2" / "student.json").is_file()
    assert next_version(version_dir.parent, published_store(state_dir)) == 3


def test_a_restarted_stack_gets_the_published_versions_back(student_export: dict[str, Any], tmp_path: Path) -> None:
    state_dir = Path(student_export["version_dir"]).parents[2] / "state"
    fresh = bare_repository(tmp_path / "repository")
    assert restore_published_versions(state_dir, fresh) == [2]
    assert restore_published_versions(state_dir, fresh) == []
    assert (fresh / STUDENT_MODEL / "2" / "tagger.onnx").is_file()


def test_the_onnx_student_answers_with_tags_categories_and_its_version(
    student_export: dict[str, Any], student_catalog_dir: Path, embedder: SentenceEmbedder
) -> None:
    student = OnnxStudent(Path(student_export["version_dir"]), student_catalog_dir)
    try:
        queries = ["happy farms organic milk", "acme gluten free pasta"]
        answers = student.understand(queries)
        assert [a.version for a in answers] == [student_export["version"]] * 2
        assert [(t.role, t.text) for t in answers[0].tags] == [
            (Role.BRAND, "happy farms"), (Role.ATTRIBUTE, "organic"), (Role.PRODUCT, "milk"),
        ]  # fmt: skip
        # The student says the span; the value is the catalog's where the catalog names the span, else the span.
        lexicon = LexiconTagger(load_catalog(student_catalog_dir))
        values = {t.text: t.canonical for t in lexicon.tag(queries[0])}
        assert [t.canonical for t in answers[0].tags] == [values.get(t.text, t.text) for t in answers[0].tags]
        assert values == {"organic": "organic", "milk": "milk"}  # "happy farms" is no brand of this catalog
        # A misspelt span the student learnt from the teacher is published as the entry the teacher read it as.
        assert student._catalog_value(Tag(Role.PRODUCT, 0, 5, "millk", "millk")).canonical == "milk"
        # Categories as version 1 ranks them: the same paths as sentence-transformers' vectors give (int8 graph).
        expected = LexiconTagger(load_catalog(student_catalog_dir)).nearest_categories_batch(
            embedder.encode(queries), 3
        )
        for answer, paths in zip(answers, expected, strict=True):
            assert len(answer.categories) == 3
            assert answer.categories[0].path == paths[0].path
            assert answer.categories[0].score == pytest.approx(paths[0].score, abs=0.05)
        batches = answer_batches(student, [[b"acme milk", b"pasta"], [b"Not Normalized"], [b"cheap bananas"]])
        assert isinstance(batches[1], ValueError) and "not normalized" in str(batches[1])
        assert [len(b) for b in batches if isinstance(b, list)] == [2, 1]
        first = orjson.loads(batches[0][0])  # type: ignore[index]
        assert first["version"] == student_export["version"] and first["tags"][0]["role"] == "brand"
    finally:
        student.close()


def test_qu_eval_scores_an_exported_version_in_process(
    student_export: dict[str, Any], student_catalog_dir: Path, cli: Cli, tmp_path: Path
) -> None:
    """``--model onnx:DIR`` answers as the served model does; the score equals a hand count on its answers."""
    from services.guardrails import Guardrails

    gold = tiny_gold()[:6]
    assert all(normalize_query(g.query) == g.query for g in gold)
    path = tmp_path / "gold.jsonl"
    path.write_bytes(
        b"".join(orjson.dumps({"query": g.query, "spans": [t.to_json() for t in g.spans]}) + b"\n" for g in gold)
    )
    version_dir = student_export["version_dir"]
    result = cli(
        "eval", "srl", "--gold", path, "--format", "qu", "--model", f"onnx:{version_dir}",
        "--catalog", student_catalog_dir, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    student = OnnxStudent(Path(version_dir), student_catalog_dir)
    guardrails = Guardrails(load_catalog(student_catalog_dir))  # what the real-time path keeps
    kept = [
        guardrails.check(u, g.query)[0] for u, g in zip(student.understand([g.query for g in gold]), gold, strict=True)
    ]
    tp = sum(len(spans(u.tags) & spans(g.spans)) for u, g in zip(kept, gold, strict=True))
    assert report["counts"]["tp"] == tp
    missing = cli("eval", "srl", "--gold", path, "--format", "qu", "--model", "onnx:/no/such/version", "--json")
    assert missing.exit_code == 1 and "/no/such/version" in missing.stderr


def spans(tags: Sequence[Tag]) -> set[tuple[Role, int, int]]:
    return {(t.role, t.start, t.end) for t in tags}
