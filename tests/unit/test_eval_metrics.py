"""Evaluation metrics on hand-made cases: spans (exact match), categories, and how predictors map offsets.

Every expected number below is computed by hand from the spans written next to it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.domain import CategoryScore, Role, Tag, Understanding
from services.errors import InputError
from services.evaluation import (
    CategoryAccuracy,
    Counts,
    GoldFormat,
    NormalizingPredictor,
    PredictionError,
    PredictorEnv,
    SpanScores,
    build_predictor,
    load_gold,
    predict_all,
    score_spans,
)
from services.evaluation.registry import UnknownPredictor
from services.settings import Settings

P, B, A = Role.PRODUCT, Role.BRAND, Role.ATTRIBUTE


def t(role: Role, start: int, end: int) -> Tag:
    return Tag(role, start, end, "x" * (end - start), "x")


# --- spans ------------------------------------------------------------------------------------


def test_exact_matches_are_true_positives() -> None:
    gold = [t(B, 0, 7), t(A, 8, 10), t(P, 11, 15)]
    counts = score_spans(gold, list(reversed(gold)))  # order does not matter
    assert counts == {P: Counts(1, 0, 0), B: Counts(1, 0, 0), A: Counts(1, 0, 0)}


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        pytest.param([t(P, 0, 10)], [t(P, 0, 9)], {P: Counts(0, 1, 1)}, id="end-off-by-one"),
        pytest.param([t(P, 0, 10)], [t(P, 1, 10)], {P: Counts(0, 1, 1)}, id="start-off-by-one"),
        pytest.param([t(P, 4, 10)], [t(P, 0, 10)], {P: Counts(0, 1, 1)}, id="prediction-contains-gold"),
        pytest.param(
            [t(P, 0, 12)], [t(A, 0, 6), t(P, 7, 12)], {P: Counts(0, 1, 1), A: Counts(0, 1, 0)}, id="gold-split-in-two"
        ),
        pytest.param([t(B, 0, 7)], [t(P, 0, 7)], {B: Counts(0, 0, 1), P: Counts(0, 1, 0)}, id="right-span-wrong-role"),
        pytest.param([t(A, 0, 5), t(P, 6, 9)], [], {A: Counts(0, 0, 1), P: Counts(0, 0, 1)}, id="empty-prediction"),
        pytest.param([], [t(P, 0, 3)], {P: Counts(0, 1, 0)}, id="empty-gold"),
        pytest.param([], [], {}, id="both-empty"),
        pytest.param([t(P, 0, 3)], [t(P, 0, 3), t(P, 0, 3)], {P: Counts(1, 1, 0)}, id="a-repeated-prediction"),
    ],
)
def test_mismatches(gold: list[Tag], predicted: list[Tag], expected: dict[Role, Counts]) -> None:
    counts = score_spans(gold, predicted)
    assert counts == {role: expected.get(role, Counts()) for role in (P, B, A)}


def test_ratios_and_zero_denominators() -> None:
    c = Counts(tp=3, fp=1, fn=2)
    assert (c.precision, c.recall) == (0.75, 0.6)
    assert c.f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert Counts(0, 0, 4).to_json() == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 4}
    assert Counts(0, 2, 0).precision == 0.0 and Counts(0, 2, 0).recall == 0.0  # no gold: recall undefined -> 0
    assert Counts() + Counts(1, 2, 3) + Counts(1, 0, 0) == Counts(2, 2, 3)
    assert Counts.from_json(Counts(5, 6, 7).to_json()) == Counts(5, 6, 7)


def test_micro_average_sums_counts_over_roles_and_queries() -> None:
    scores = SpanScores()
    # query 1: brand right, product boundary wrong; query 2: attribute right, product missed; query 3: nothing gold
    scores.add([t(B, 0, 4), t(P, 5, 12)], [t(B, 0, 4), t(P, 5, 11)], "brand_type")
    scores.add([t(A, 0, 7), t(P, 8, 15)], [t(A, 0, 7)], "attribute_type")
    scores.add([], [t(A, 0, 3)], "broad")
    assert scores.per_role == {P: Counts(0, 1, 2), B: Counts(1, 0, 0), A: Counts(1, 1, 0)}
    assert scores.micro == Counts(2, 2, 2)
    result = scores.to_json()
    assert (result["precision"], result["recall"], result["f1"], result["n"]) == (0.5, 0.5, 0.5, 3)
    assert result["counts"] == {"tp": 2, "fp": 2, "fn": 2}
    assert result["per_role"]["product"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 2}
    assert result["per_role"]["attribute"]["precision"] == 0.5 and result["per_role"]["attribute"]["recall"] == 1.0
    by_kind = result["by_kind"]
    assert list(by_kind) == ["attribute_type", "brand_type", "broad"]
    assert (by_kind["brand_type"]["tp"], by_kind["brand_type"]["fp"], by_kind["brand_type"]["fn"]) == (1, 1, 1)
    assert by_kind["attribute_type"]["per_role"]["product"]["fn"] == 1
    assert (by_kind["broad"]["precision"], by_kind["broad"]["fp"]) == (0.0, 1)


def test_reports_merge_to_the_report_of_all_queries() -> None:
    cases = [
        ([t(B, 0, 4), t(P, 5, 12)], [t(B, 0, 4)], "brand_type"),
        ([t(P, 0, 4)], [t(P, 0, 4), t(A, 5, 6)], "product_type"),
        ([t(A, 0, 2)], [t(A, 0, 3)], "brand_type"),
    ]
    whole, first, second = SpanScores(), SpanScores(), SpanScores()
    for i, (gold, predicted, kind) in enumerate(cases):
        whole.add(gold, predicted, kind)
        (first if i < 2 else second).add(gold, predicted, kind)
    merged = first.merge(second)
    assert merged.to_json() == whole.to_json()
    assert first.queries == 2  # merge changes neither input


def test_no_kind_no_breakdown() -> None:
    scores = SpanScores()
    scores.add([t(P, 0, 4)], [t(P, 0, 4)])
    assert "by_kind" not in scores.to_json()


# --- categories -------------------------------------------------------------------------------


def cats(*paths: str) -> list[CategoryScore]:
    return [CategoryScore(tuple(p.split(" > ")), 0.5) for p in paths]


def test_category_accuracy_top1_top3_within_and_skipped() -> None:
    accuracy = CategoryAccuracy()
    accuracy.add(("dairy eggs", "milk"), cats("dairy eggs > milk", "dairy eggs > yogurt"), "product_type")  # top1
    accuracy.add(("dairy eggs", "milk"), cats("snacks > chips", "dairy eggs > yogurt", "dairy eggs > milk"))  # top3
    accuracy.add(("frozen",), cats("frozen > ice cream", "frozen"), "broad")  # top3 and within, not top1
    accuracy.add(("produce", "fresh fruits"), cats("produce > fresh fruits x", "a", "b", "produce > fresh fruits"))
    accuracy.add(("bakery", "bread"), [], "product_type")  # nothing predicted: a miss
    accuracy.add(None, cats("bakery > bread"))  # no gold category: not scored
    result = accuracy.to_json()
    assert (result["n"], result["top1_hits"], result["top3_hits"], result["top1_within_hits"]) == (5, 1, 3, 2)
    assert (result["top1"], result["top3"], result["top1_within"]) == (0.2, 0.6, 0.4)
    assert result["without_gold_category"] == 1
    assert result["by_kind"]["product_type"]["n"] == 2 and result["by_kind"]["product_type"]["top1"] == 0.5
    assert result["by_kind"]["broad"]["top1_within"] == 1.0


def test_no_gold_category_at_all_gives_zero_not_an_error() -> None:
    accuracy = CategoryAccuracy()
    accuracy.add(None, cats("a > b"))
    assert accuracy.to_json()["n"] == 0 and accuracy.to_json()["top1"] == 0.0


# --- predictors: offsets on the query as given ------------------------------------------------


def test_tags_on_the_normalized_query_are_scored_on_the_gold_text() -> None:
    seen: list[list[str]] = []

    def model(normalized: list[str]) -> list[Understanding]:
        seen.append(normalized)
        answers = []
        for q in normalized:
            tags = [Tag(B, 0, 8, q[0:8], "Kellogg's")] if q.startswith("kelloggs") else []
            if q.endswith("12 oz"):
                tags.append(Tag(A, len(q) - 5, len(q), "12 oz", "12 oz"))
            answers.append(Understanding(tags, version="fake-1"))
        return answers

    predictor = NormalizingPredictor("fake", model)
    out = asyncio.run(predictor.predict(["Kellogg's  Special K 12oz", "!!!", "milk"]))
    assert seen == [["kelloggs special k 12 oz", "milk"]]  # the query with no words is not sent
    assert [(x.start, x.end, x.text) for x in out[0].tags] == [(0, 9, "Kellogg's"), (21, 25, "12oz")]
    assert out[1] == Understanding()
    assert out[2].tags == [] and out[2].version == "fake-1"


def test_an_async_model_and_the_guard_are_used() -> None:
    async def model(normalized: list[str]) -> list[Understanding]:
        return [Understanding([Tag(P, 0, len(q), q, q), Tag(B, 0, 1, q[0], "?")]) for q in normalized]

    def drop_brands(u: Understanding, normalized: str) -> Understanding:
        return Understanding([x for x in u.tags if x.role is not B], u.categories, u.rewrites, u.version)

    out = asyncio.run(NormalizingPredictor("fake", model, guard=drop_brands).predict(["Milk"]))
    assert [(x.role, x.start, x.end, x.text) for x in out[0].tags] == [(P, 0, 4, "Milk")]


def test_a_model_that_miscounts_or_tags_off_the_query_fails_loudly() -> None:
    short = NormalizingPredictor("short", lambda qs: [Understanding()])
    with pytest.raises(PredictionError, match="short answered 1 of 2"):
        asyncio.run(short.predict(["milk", "eggs"]))
    off = NormalizingPredictor("off", lambda qs: [Understanding([Tag(P, 2, 9, "?", "?")]) for _ in qs])
    with pytest.raises(PredictionError, match=r"off tagged \[2, 9\)"):
        asyncio.run(off.predict(["milk"]))


def test_predict_all_batches_and_reports_progress() -> None:
    sizes: list[int] = []

    def model(normalized: list[str]) -> list[Understanding]:
        sizes.append(len(normalized))
        return [Understanding(version=q) for q in normalized]

    progress: list[int] = []
    queries = [f"q{i}" for i in range(7)]
    out = asyncio.run(predict_all(NormalizingPredictor("m", model), queries, batch_size=3, progress=progress.append))
    assert [u.version for u in out] == queries
    assert sizes == [3, 3, 1] and progress == [3, 3, 1]


# --- the registry and gold loading -----------------------------------------------------------


def test_the_registry_names_predictors_and_versions(settings: Settings) -> None:
    env = PredictorEnv(settings)
    assert build_predictor("3", env).name == "student:3"  # nothing connects before the first predict
    assert build_predictor("student:12", env).name == "student:12"
    assert build_predictor("student", env).name == "student"
    with pytest.raises(UnknownPredictor, match=r"no predictor named 'gpt'.*lexicon"):
        build_predictor("gpt", env)


def test_load_gold_refuses_the_held_out_split_missing_and_empty_files(tmp_path: Path) -> None:
    test_split = tmp_path / "test.json"
    test_split.write_text('{"examples": []}')
    with pytest.raises(InputError, match="held out"):
        load_gold(test_split, GoldFormat.QUERYNER)
    with pytest.raises(InputError, match="no such gold file") as caught:
        load_gold(tmp_path / "validation.json", GoldFormat.QUERYNER)
    assert caught.value.source == str(tmp_path / "validation.json")
    empty = tmp_path / "labels.jsonl"
    empty.write_text("\n")
    with pytest.raises(InputError, match="no gold queries"):
        load_gold(empty, GoldFormat.QU)
    two = tmp_path / "two.jsonl"
    two.write_text('{"query": "milk"}\n{"query": "eggs"}\n')
    assert [g.query for g in load_gold(two, GoldFormat.QU, limit=1)] == ["milk"]
