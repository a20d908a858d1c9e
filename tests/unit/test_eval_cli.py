"""``qu eval srl`` and ``qu eval report`` in-process, with the catalog-lexicon predictor on the demo catalog.

The QueryNER-shaped file below is scored by hand: what the lexicon tagger answers for each query
on the demo catalog is pinned in tests/unit/test_lexicon_tagger.py (test_demo_catalog).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.catalog.artifacts import load_catalog
from services.domain import Role, Tag, Understanding
from services.evaluation.registry import PredictorEnv
from services.gold.queryner import LABEL_NAMES
from services.settings import Settings
from tests.conftest import Cli

ID = {name: i for i, name in enumerate(LABEL_NAMES)}

# (tokens with their gold labels) -> what the lexicon tagger answers, mapped back to the query as given
EXAMPLES: list[list[tuple[str, str]]] = [
    # gold: attribute "organic", product "bananas"; predicted: the same -> attribute tp, product tp
    [("organic", "B-modifier"), ("bananas", "B-core_product_type")],
    # gold: brand "happy baby", product "spinach"; predicted: the same -> brand tp, product tp
    [("happy", "B-creator"), ("baby", "I-creator"), ("spinach", "B-core_product_type")],
    # gold: attribute "x large", product "zip lock"; predicted: attribute "x large" only -> attribute tp, product fn
    [("x", "B-modifier"), ("large", "I-modifier"), ("zip", "B-core_product_type"), ("lock", "I-core_product_type")],
    # gold: brand "Kellogg's" [0, 9), attribute "Special K"; predicted: brand "kelloggs" (normalized, mapped back
    # to [0, 9)), brand "special k" -> brand tp, brand fp, attribute fn
    [("Kellogg's", "B-creator"), ("Special", "B-product_name"), ("K", "I-product_name")],
    # gold: department only (ignored), so nothing; predicted: product "granola bars" -> product fp
    [("granola", "B-department"), ("bars", "I-department")],
    # gold: product "bread", attribute "gluten" (an I- without its B-); predicted: product "bread", attribute
    # "no gluten" [6, 15) -> product tp, attribute fp + attribute fn (boundary mismatch)
    [("bread", "B-core_product_type"), ("no", "O"), ("gluten", "I-modifier")],
]
# product: tp 3 (1, 2, 6), fp 1 (5), fn 1 (3); brand: tp 2 (2, 4), fp 1 (4), fn 0;
# attribute: tp 2 (1, 3), fp 1 (6), fn 2 (4, 6); micro: tp 7, fp 3, fn 3 -> P = R = F1 = 0.7
EXPECTED_ROLES = {
    "product": {"precision": 0.75, "recall": 0.75, "f1": 0.75, "tp": 3, "fp": 1, "fn": 1},
    "brand": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "tp": 2, "fp": 1, "fn": 0},
    "attribute": {"precision": 0.6667, "recall": 0.5, "f1": 0.5714, "tp": 2, "fp": 1, "fn": 2},
}


@pytest.fixture
def queryner_file(tmp_path: Path) -> Path:
    examples = [{"tokens": [t for t, _ in ex], "ner_tags": [ID[label] for _, label in ex]} for ex in EXAMPLES]
    path = tmp_path / "validation.json"
    path.write_bytes(orjson.dumps({"examples": examples}))
    return path


def run_json(cli: Cli, *args: str | Path) -> dict[str, Any]:
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    value: dict[str, Any] = orjson.loads(result.stdout)
    return value


def test_srl_queryner_with_the_lexicon_predictor_equals_the_hand_count(
    cli: Cli, student_catalog_dir: Path, queryner_file: Path
) -> None:
    result = run_json(
        cli, "eval", "srl", "--gold", queryner_file, "--format", "queryner", "--catalog", student_catalog_dir, "--json"
    )
    assert (result["precision"], result["recall"], result["f1"]) == (0.7, 0.7, 0.7)
    assert result["counts"] == {"tp": 7, "fp": 3, "fn": 3}
    assert result["per_role"] == EXPECTED_ROLES
    assert (result["n"], result["model"], result["format"]) == (6, "lexicon", "queryner")
    assert result["gold_file"] == str(queryner_file)
    assert result["model_version"].startswith("catalog-lexicon-v2+catalog.")
    assert "by_kind" not in result  # QueryNER has no kinds

    limited = run_json(
        cli, "eval", "srl", "--gold", queryner_file, "--format", "queryner", "--catalog", student_catalog_dir,
        "--limit", "2", "--json",
    )  # fmt: skip
    assert (limited["n"], limited["counts"]) == (2, {"tp": 4, "fp": 0, "fn": 0})


def test_srl_writes_each_wrong_query_with_its_error_classes(
    cli: Cli, student_catalog_dir: Path, queryner_file: Path, tmp_path: Path
) -> None:
    errors = tmp_path / "errors.jsonl"
    args = ("eval", "srl", "--gold", queryner_file, "--format", "queryner", "--catalog", student_catalog_dir)
    result = run_json(cli, *args, "--errors", errors, "--json")
    lines = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    counted = result["errors"]
    assert counted["queries"] == len(lines) >= 1 and counted["file"] == str(errors)
    # The 3 false positives and 3 false negatives of the hand count, each classed once.
    classes = [e["class"] for line in lines for e in line["errors"]]
    assert (
        sum(c in ("missed", "spurious") for c in classes)
        + 2 * sum(c in ("role", "boundary", "boundary+role") for c in classes)
        == 6
    )
    assert all(line["gold"] != line["predicted"] for line in lines)
    assert result["error_classes"]["wrong_queries"] == len(lines)


# The queries of EXAMPLES (what the lexicon tagger answers is pinned above), labelled as a public character-span
# BIO set would label them, with its own labels: MOD and NAME map to attribute, DEPT to nothing.
SPANS_GOLD: list[dict[str, Any]] = [
    # right: attribute "organic", product "bananas"
    {"text": "organic bananas", "labels": [[0, 7, "B-MOD"], [8, 15, "B-TYPE"]], "id": 1},
    # right: "happy" + "baby" merge into the brand "happy baby", as predicted
    {"text": "happy baby spinach", "labels": [[0, 5, "B-BRAND"], [6, 10, "I-BRAND"], [11, 18, "B-TYPE"]], "id": 2},
    # product "zip lock" missed (attribute "x large" found)
    {"text": "x large zip lock", "labels": [[0, 1, "B-MOD"], [2, 7, "I-MOD"], [8, 11, "B-TYPE"], [12, 16, "I-TYPE"]]},
    # attribute "Special K" predicted as a brand over the same characters: role
    {"text": "Kellogg's Special K", "labels": [[0, 9, "B-BRAND"], [10, 17, "B-NAME"], [18, 19, "I-NAME"]]},
    # DEPT is not mapped: nothing gold, so the predicted product "granola bars" is spurious
    {"text": "granola bars", "labels": [[0, 7, "B-DEPT"], [8, 12, "I-DEPT"]]},
    # "gluten" (an I- with no B-) is an attribute span; "no gluten" predicted: boundary
    {"text": "bread no gluten", "labels": [[0, 5, "B-TYPE"], [6, 8, "O"], [9, 15, "I-MOD"]]},
    # brand "granola" vs the predicted product "granola bars": boundary+role
    {"text": "granola bars", "labels": [[0, 7, "B-BRAND"], [8, 12, "O"]]},
]  # fmt: skip
SPANS_MAP = "TYPE=product,BRAND=brand,MOD=attribute,NAME=attribute"


def test_srl_on_character_span_bio_gold_writes_every_prediction_with_its_error_classes(
    cli: Cli, student_catalog_dir: Path, tmp_path: Path
) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in SPANS_GOLD))
    predictions = tmp_path / "out" / "predictions.jsonl"
    result = run_json(
        cli, "eval", "srl", "--gold", gold, "--format", "spans", "--label-map", SPANS_MAP,
        "--catalog", student_catalog_dir, "--predictions", predictions, "--json",
    )  # fmt: skip
    assert (result["n"], result["format"], result["ignored_labels"]) == (7, "spans", {"DEPT": 1})
    assert result["label_map"] == {"TYPE": "product", "BRAND": "brand", "MOD": "attribute", "NAME": "attribute"}
    assert {role: (row["tp"], row["fp"], row["fn"]) for role, row in result["per_role"].items()} == {
        "product": (3, 2, 1),
        "brand": (2, 1, 1),
        "attribute": (2, 1, 2),
    }
    classes = result["error_classes"]
    zero = dict.fromkeys(("missed", "spurious", "boundary", "role", "boundary+role"), 0)
    assert classes["per_role"] == {
        "product": {**zero, "missed": 1, "spurious": 1},
        "brand": {**zero, "boundary+role": 1},
        "attribute": {**zero, "boundary": 1, "role": 1},
    }
    assert {k: classes[k] for k in zero} == dict.fromkeys(zero, 1) and classes["wrong_queries"] == 5
    assert result["predictions"] == {"file": str(predictions), "queries": 7, **classes}

    lines = [orjson.loads(line) for line in predictions.read_bytes().splitlines()]
    assert [line["query"] for line in lines] == [row["text"] for row in SPANS_GOLD]
    assert [[e["class"] for e in line["errors"]] for line in lines] == [
        [], [], ["missed"], ["role"], ["spurious"], ["boundary"], ["boundary+role"]
    ]  # fmt: skip
    assert lines[1]["gold"][0] == {"role": "brand", "start": 0, "end": 10, "text": "happy baby", "type": "BRAND"}
    assert lines[3]["predicted"][1] == {"role": "brand", "start": 10, "end": 19, "text": "Special K"}
    assert lines[3]["errors"][0]["gold"] == {"role": "attribute", "start": 10, "end": 19, "text": "Special K"}
    assert lines[5]["source"] == f"{gold}:6"
    assert [p.name for p in predictions.parent.iterdir()] == ["predictions.jsonl"]  # no temporary left

    # The same set through `eval report --spans`.
    report = run_json(
        cli, "eval", "report", "--spans", gold, "--label-map", SPANS_MAP, "--catalog", student_catalog_dir,
        "--predictions", predictions, "--json",
    )  # fmt: skip
    assert report["srl"]["spans"]["per_role"] == result["per_role"]
    assert report["srl"]["spans"]["error_classes"] == classes and report["srl"]["spans"]["ignored_labels"] == {
        "DEPT": 1
    }
    assert report["predictions"]["spans"]["queries"] == 7


def test_only_the_attribute_kinds_a_gold_set_labels_are_scored(
    cli: Cli, student_catalog_dir: Path, tmp_path: Path
) -> None:
    # A set that labels sizes alone: "organic" is an attribute the engine rightly tags and the set leaves out.
    gold = tmp_path / "gold.jsonl"
    rows = [
        {"text": "organic milk 16 oz", "labels": [[0, 7, "O"], [8, 12, "B-TYPE"], [13, 15, "B-VOL"], [16, 18, "I-VOL"]]}
    ]
    gold.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    args = ("eval", "srl", "--gold", gold, "--format", "spans", "--label-map", "TYPE=product,VOL=attribute")
    every = run_json(cli, *args, "--catalog", student_catalog_dir, "--json")
    assert (every["per_role"]["attribute"]["tp"], every["per_role"]["attribute"]["fp"]) == (1, 1)
    sizes = run_json(cli, *args, "--gold-attribute-kinds", "size", "--catalog", student_catalog_dir, "--json")
    assert (sizes["per_role"]["attribute"]["tp"], sizes["per_role"]["attribute"]["fp"]) == (1, 0)
    assert sizes["left_out_attributes"] == {"claim": 1} and sizes["gold_attribute_kinds"] == ["size"]
    wrong = cli(*args, "--gold-attribute-kinds", "volume", "--catalog", student_catalog_dir, "--json")
    assert wrong.exit_code == 2 and "'volume' is not an attribute kind" in wrong.stderr


def test_the_spans_format_and_its_label_map_go_together(cli: Cli, student_catalog_dir: Path, tmp_path: Path) -> None:
    gold = tmp_path / "gold.jsonl"
    gold.write_bytes(orjson.dumps({"text": "milk", "labels": [[0, 4, "B-TYPE"]]}) + b"\n")
    args = ("eval", "srl", "--gold", gold, "--catalog", student_catalog_dir, "--json")
    for extra, says in [
        (("--format", "spans"), "--label-map"),
        (("--format", "qu", "--label-map", "TYPE=product"), "--label-map"),
        (("--format", "spans", "--label-map", "TYPE=thing"), "not a role"),
    ]:
        result = cli(*args, *extra)
        assert result.exit_code == 2 and says in result.stderr, result.stderr
    gold.write_bytes(orjson.dumps({"text": "milk", "labels": [[0, 5, "B-TYPE"]]}) + b"\n")
    result = cli(*args, "--format", "spans", "--label-map", "TYPE=product")
    assert result.exit_code == 1 and f"{gold}, row 1, column 'labels[0]'" in result.stderr


def test_srl_prints_a_table_without_json(cli: Cli, student_catalog_dir: Path, queryner_file: Path) -> None:
    result = cli("eval", "srl", "--gold", queryner_file, "--format", "queryner", "--catalog", student_catalog_dir)
    assert result.exit_code == 0, result.stderr
    for word in ("product", "brand", "attribute", "micro", "0.700"):
        assert word in result.stdout


def test_a_missing_or_wrong_gold_file_is_an_error_naming_it(
    cli: Cli, student_catalog_dir: Path, tmp_path: Path, queryner_file: Path
) -> None:
    missing = tmp_path / "nope.json"
    result = cli("eval", "srl", "--gold", missing, "--format", "queryner", "--catalog", student_catalog_dir, "--json")
    assert result.exit_code == 1 and str(missing) in result.stderr and "no such gold file" in result.stderr
    labels = tmp_path / "events.labels.jsonl"
    labels.write_text('{"query": "milk", "spans": []}\n{"query": "eggs", "spans": []}\n')
    result = cli("eval", "srl", "--gold", labels, "--format", "queryner", "--catalog", student_catalog_dir, "--json")
    assert result.exit_code == 1 and str(labels) in result.stderr and "not JSON" in result.stderr
    result = cli("eval", "srl", "--gold", queryner_file, "--format", "qu", "--catalog", student_catalog_dir, "--json")
    assert result.exit_code == 1 and f"{queryner_file}, row 1" in result.stderr
    result = cli("eval", "srl", "--gold", queryner_file, "--format", "queryner", "--model", "nobody", "--json")
    assert result.exit_code == 1 and "no predictor named 'nobody'" in result.stderr


def test_report_on_labels_and_queryner(
    cli: Cli, student_catalog_dir: Path, queryner_file: Path, tmp_path: Path
) -> None:
    banana = next(
        p for p in load_catalog(student_catalog_dir).products if p.category_path == ("produce", "fresh fruits")
    )
    labels = tmp_path / "events.labels.jsonl"
    rows = [
        {"query": "organic bananas", "kind": "attribute_type", "category": "produce > fresh fruits",
         "spans": [{"role": "attribute", "start": 0, "end": 7, "text": "organic", "canonical": "organic"},
                   {"role": "product", "start": 8, "end": 15, "text": "bananas", "canonical": "bananas"}]},
        {"query": "happy baby spinach", "kind": "brand_type", "category": None,
         "spans": [{"role": "brand", "start": 0, "end": 10, "text": "happy baby", "canonical": "Happy Baby"}]},
    ]  # fmt: skip
    labels.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    log = tmp_path / "conversions.jsonl"
    log.write_bytes(
        orjson.dumps(
            {"query": "organic bananas", "session_id": "s", "user_id": "u", "product_id": banana.product_id,
             "ts": "2026-11-01T00:00:00Z"}
        ) + b"\n"
    )  # fmt: skip
    history = tmp_path / "conversions"
    built = cli("conversions", "build", log, "--catalog", student_catalog_dir, "--out", history)
    assert built.exit_code == 0, built.stderr

    report = run_json(
        cli, "eval", "report", "--labels", labels, "--queryner", queryner_file, "--conversions", history,
        "--catalog", student_catalog_dir, "--json",
    )  # fmt: skip
    assert set(report) == {"model", "model_version", "srl", "categories", "rewrites", "guardrails", "files"}
    assert report["guardrails"] is True
    assert report["srl"]["queryner"]["per_role"] == EXPECTED_ROLES
    on_labels = report["srl"]["labels"]
    # the brand and the two spans of "organic bananas" are found; "spinach" is predicted but not labelled
    assert (on_labels["counts"], on_labels["n"]) == ({"tp": 3, "fp": 1, "fn": 0}, 2)
    assert set(on_labels["by_kind"]) == {"attribute_type", "brand_type"}
    assert (report["categories"]["n"], report["categories"]["without_gold_category"]) == (1, 1)
    rewrites = report["rewrites"]
    # the lexicon predictor writes no rewrites: coverage 0, nothing to judge
    assert (rewrites["queries"], rewrites["queries_with_conversions"]) == (2, 1)
    assert (rewrites["any"]["coverage"], rewrites["any"]["precision"], rewrites["any"]["kept"]) == (0.0, None, 0)
    assert report["files"]["conversions"] == str(history)

    missing = tmp_path / "no-history"
    result = cli("eval", "report", "--labels", labels, "--conversions", missing, "--catalog", student_catalog_dir)
    assert result.exit_code == 1 and str(missing) in result.stderr
    table = cli("eval", "report", "--labels", labels, "--catalog", student_catalog_dir)  # no history in STATE_DIR
    assert table.exit_code == 0, table.stderr
    assert "rewrite precision is not measured" in table.stderr and "Category accuracy" in table.stdout

    # --errors: the wrong queries of both gold sets in one file, each line naming its set.
    errors = tmp_path / "report-errors.jsonl"
    both = ("--labels", labels, "--queryner", queryner_file, "--catalog", student_catalog_dir)
    with_errors = run_json(cli, "eval", "report", *both, "--errors", errors, "--json")
    lines = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert with_errors["errors"]["labels"]["queries"] == 1 and with_errors["errors"]["labels"]["spurious"] == 1
    assert {line["gold_set"] for line in lines} == {"labels", "queryner"}
    assert with_errors["errors"]["queryner"]["queries"] == sum(line["gold_set"] == "queryner" for line in lines)
    assert with_errors["srl"]["labels"]["error_classes"]["spurious"] == 1


@pytest.mark.parametrize(("guardrails", "kept"), [(True, []), (False, ["Zorb"])])  # mapped back to the query as typed
def test_without_guardrails_the_raw_answer_is_scored(
    student_catalog_dir: Path, tmp_path: Path, guardrails: bool, kept: list[str]
) -> None:
    # "zorb" is no brand of the catalog: the guardrails drop it, as the engine would before publishing.
    def answer(queries: list[str]) -> list[Understanding]:
        return [Understanding([Tag(Role.BRAND, 0, 4, "zorb", "zorb")], version="fake") for _ in queries]

    env = PredictorEnv(Settings(state_dir=tmp_path), student_catalog_dir, guardrails=guardrails)
    [understood] = asyncio.run(env.wrap("fake", answer).predict(["Zorb cola"]))
    assert [t.text for t in understood.tags] == kept
