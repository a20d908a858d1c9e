"""MODEL_CARD.md of an exported student version: what it was trained on, how it scores, how big and fast it is."""

from __future__ import annotations

from typing import Any

from services.student.bio import ROLES


def _score_rows(label: str, scores: dict[str, Any]) -> list[str]:
    cells = [f"{scores['precision']:.3f} / {scores['recall']:.3f} / {scores['f1']:.3f}"]
    for role in ROLES:
        one = scores["per_role"][role.value]
        cells.append(f"{one['precision']:.3f} / {one['recall']:.3f} / {one['f1']:.3f}")
    return [f"| {label} | {scores.get('n', scores.get('queries', '?'))} | " + " | ".join(cells) + " |"]


def _averaging(decay: object) -> str:
    return f"a moving average (decay {decay} per step)" if decay else "of the last step"


def model_card(record: dict[str, Any], config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The card's Markdown, from the export record, the run's config.json and its metrics.json."""
    data = metrics.get("data", {})
    r = config.get("lora_r")
    alpha = config.get("lora_alpha") or 2 * int(r or 0)
    epochs = f"{metrics.get('epochs_done', '?')} of {config.get('epochs')} epochs"
    optimizer = f"{metrics.get('steps')} steps of {config.get('batch_size')}, lr {config.get('learning_rate')}"
    checks = record["checks"]
    agreement = f"{checks['int8_label_agreement']:.2%} (max abs logit diff {checks['int8_max_abs_diff']})"
    lines = [
        f"# qu_student version {record['triton_version']}: `{record['version']}`",
        "",
        "A MiniLM-L6 (all-MiniLM-L6-v2) BIO token classifier for grocery queries (roles product, brand,",
        "attribute), LoRA-distilled from the teacher's curriculum, adapter merged into the weights, exported",
        "to ONNX and run by onnxruntime inside Triton's Python backend. Categories: the 3 catalog category",
        "paths nearest the query's base-MiniLM sentence vector (a second ONNX graph), as version 1 ranks them.",
        "",
        f"- serving precision: tagger **{record['precision']}**, query embedder"
        f" **{record.get('embedder_precision', record['precision'])}**; exported {record['exported_at']}",
        f"- run `{record['run_id']}`: LoRA r={r} alpha={alpha} on query/key/value/dense, head trained fully;"
        f" {epochs}, {optimizer}, seed {config.get('seed')}, {metrics.get('train_seconds')} s",
        f"- recipe: QueryNER train x{config.get('queryner_repeat', 1)} per epoch; weights"
        f" {_averaging(config.get('ema_decay'))}; QueryNER type head weight {config.get('type_head_weight', 0.0)};"
        f" epoch saved {metrics.get('epoch_saved', metrics.get('epochs_done', '?'))}"
        f" ({'best on ' + str(config['select_on']) if config.get('select_on') else 'the last'})",
        "",
        "## Data",
        "",
        f"- curriculum: `{config.get('curriculum')}`; held out by hash of the normalized query:"
        f" {config.get('heldout_percent')}%",
        f"- QueryNER: `{config.get('queryner_dir')}`, train used: {config.get('queryner_train')};"
        " validation is a second held-out set; the test split is never read",
        f"- training examples: {data.get('train_examples')}; held-out: {data.get('heldout_examples')};"
        f" QueryNER validation: {data.get('queryner_validation_examples')}",
        f"- spans lost to normalization: curriculum {data.get('curriculum', {}).get('dropped_spans')},"
        f" QueryNER train {data.get('queryner_train', {}).get('dropped_spans')},"
        f" validation {data.get('queryner_validation', {}).get('dropped_spans')};"
        f" not on word boundaries (train): {data.get('unaligned_train_spans')}",
        "",
        "## Scores (exact span match on the normalized query; P / R / F1)",
        "",
        "| set, model | queries | micro | " + " | ".join(role.value for role in ROLES) + " |",
        "|---|---|---|" + "---|" * len(ROLES),
    ]
    for name, scores in record.get("training_scores", {}).items():
        lines += _score_rows(f"{name}, torch (adapter)", scores)
    for precision, by_set in record["scores"].items():
        for name, scores in by_set.items():
            lines += _score_rows(f"{name}, ONNX {precision}", scores)
    lines += [
        "",
        "## Export checks",
        "",
        f"- merged vs adapter, max abs logit diff: {checks['merge_max_abs_diff']}",
        f"- ONNX fp32 vs torch, max abs logit diff: {checks['onnx_fp32_max_abs_diff']}",
        f"- int8 word labels equal to fp32's: {agreement}",
        f"- embedder vs sentence-transformers, min cosine: fp32 {checks['embedder_min_cosine_fp32']},"
        f" int8 {checks['embedder_min_cosine_int8']}",
        "",
        "## Size and in-process latency (batch 1, one intra-op thread, this machine at export time)",
        "",
        "| precision | tagger p50 / p99 ms | tagger + embedder p50 / p99 ms |",
        "|---|---|---|",
    ]
    for precision, t in record["latency_in_process"].items():
        lines.append(
            f"| {precision} | {t['tagger_p50_ms']} / {t['tagger_p99_ms']} | "
            f"{t['tagger_embedder_p50_ms']} / {t['tagger_embedder_p99_ms']} |"
        )
    categories = record.get("int8_embedder_categories") or {}
    if categories:
        lines += [
            "",
            f"int8 embedder vs fp32 on {categories['queries']} held-out queries: same top-1 category"
            f" {categories['top1_same']:.1%}, same top-3 list {categories['top3_same']:.1%}.",
        ]
    lines += ["", "Sizes (MB): " + ", ".join(f"{k[:-3]} {v}" for k, v in record["sizes"].items()), ""]
    return "\n".join(lines)
