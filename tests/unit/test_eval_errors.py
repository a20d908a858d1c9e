"""Per-query span errors, each gold span and prediction classed once; the --errors / --predictions files."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.domain import Role, Tag, Understanding
from services.evaluation.errors import CLASSES, ErrorCounts, classify, query_errors, write_query_lines
from services.gold import GoldQuery
from services.span_scores import score_spans

QUERY = "organic whole milk horizon"
A, P, B = Role.ATTRIBUTE, Role.PRODUCT, Role.BRAND


def tag(role: Role, start: int, end: int) -> Tag:
    return Tag(role, start, end, QUERY[start:end], QUERY[start:end])


def classes(gold: list[Tag], predicted: list[Tag]) -> list[str]:
    found = query_errors(GoldQuery(QUERY, tuple(gold)), Understanding(predicted))
    return [] if found is None else [e["class"] for e in found["errors"]]


def test_a_right_answer_has_no_errors() -> None:
    spans = [tag(A, 0, 7), tag(P, 8, 18)]
    assert classes(spans, spans) == []


@pytest.mark.parametrize(
    ("gold", "predicted", "expected"),
    [
        pytest.param([tag(P, 14, 18)], [], ["missed"], id="missed"),
        pytest.param([], [tag(B, 19, 26)], ["spurious"], id="spurious"),
        pytest.param([tag(P, 14, 18)], [tag(P, 8, 18)], ["boundary"], id="boundary"),
        pytest.param([tag(A, 0, 7)], [tag(P, 0, 7)], ["role"], id="role"),
        pytest.param([tag(A, 8, 13)], [tag(P, 8, 18)], ["boundary+role"], id="boundary+role"),
    ],
)
def test_each_class_alone(gold: list[Tag], predicted: list[Tag], expected: list[str]) -> None:
    assert classes(gold, predicted) == expected


def test_each_kind_of_error_is_named_in_gold_order_then_spurious() -> None:
    gold = [tag(A, 0, 7), tag(P, 14, 18), tag(B, 19, 26), tag(A, 8, 13)]
    predicted = [tag(P, 0, 7), tag(P, 8, 18), tag(A, 8, 10), tag(A, 20, 22)]
    # organic: another role; milk vs whole milk: boundary; horizon vs "or" (attribute): boundary+role;
    # "whole" vs "wh": boundary; nothing left over.
    assert classes(gold, predicted) == ["role", "boundary", "boundary+role", "boundary"]
    assert classes(gold[:3], predicted[:2]) == ["role", "boundary", "missed"]
    assert classes(gold[:2], predicted) == ["role", "boundary", "spurious", "spurious"]


def test_a_closer_match_is_preferred_over_an_earlier_looser_one() -> None:
    # "whole milk" (product) could be a boundary+role error of the attribute "whole", but it is the
    # boundary error of the product "milk"; "whole" is then missed.
    gold = [tag(A, 8, 13), tag(P, 14, 18)]
    assert classes(gold, [tag(P, 8, 18)]) == ["missed", "boundary"]
    # Two predictions overlap "whole milk": the one sharing more characters is paired, the other is spurious.
    found = classify([tag(P, 8, 18)], [tag(P, 8, 10), tag(P, 10, 18)])
    assert [(e["class"], e["predicted"]["start"]) for e in found] == [("boundary", 10), ("spurious", 8)]


def test_a_prediction_overlapping_only_a_matched_span_is_spurious() -> None:
    assert classes([tag(P, 14, 18)], [tag(P, 14, 18), tag(P, 8, 18), tag(B, 19, 26)]) == ["spurious", "spurious"]


def test_a_repeated_prediction_matches_once_as_the_scorer_counts() -> None:
    assert classes([tag(P, 14, 18)], [tag(P, 14, 18), tag(P, 14, 18)]) == ["spurious"]


def test_every_false_positive_and_negative_of_the_scorer_is_one_error() -> None:
    gold = [tag(A, 0, 7), tag(P, 14, 18), tag(B, 19, 26), tag(A, 8, 13)]
    cases = [[], [tag(P, 0, 7), tag(P, 8, 18)], [tag(A, 0, 7), tag(B, 19, 26), tag(B, 19, 26), tag(A, 8, 26)]]
    for predicted in cases:
        counts = score_spans(gold, predicted)
        errors = classify(gold, predicted)
        paired = sum(e["class"] in ("role", "boundary", "boundary+role") for e in errors)
        assert sum(c.fn for c in counts.values()) == paired + sum(e["class"] == "missed" for e in errors)
        assert sum(c.fp for c in counts.values()) == paired + sum(e["class"] == "spurious" for e in errors)


def test_errors_are_counted_under_the_gold_role_and_spurious_under_the_predicted_one() -> None:
    counts = ErrorCounts()
    counts.add(classify([tag(A, 0, 7), tag(P, 14, 18)], [tag(P, 0, 7), tag(B, 19, 26)]))
    counts.add([])
    summary = counts.to_json()
    assert (summary["queries"], summary["wrong_queries"]) == (2, 1)
    assert {k: summary[k] for k in CLASSES} == {"missed": 1, "spurious": 1, "boundary": 0, "role": 1,
                                                 "boundary+role": 0}  # fmt: skip
    assert summary["per_role"]["attribute"]["role"] == 1
    assert summary["per_role"]["product"]["missed"] == 1
    assert summary["per_role"]["brand"]["spurious"] == 1


def test_predictions_file_holds_every_query_and_errors_file_the_wrong_ones(tmp_path: Path) -> None:
    right = GoldQuery(QUERY, (tag(P, 14, 18),), source="gold:1", span_types=("TYPE",))
    wrong = GoldQuery(QUERY, (tag(B, 19, 26),), source="gold:2", span_types=("BRAND",))
    answers = [Understanding([tag(P, 14, 18)]), Understanding([tag(A, 19, 26)])]
    sets = [("x5", [right, wrong], answers)]
    every = write_query_lines(tmp_path / "predictions.jsonl", sets, every=True)["x5"]
    wrong_only = write_query_lines(tmp_path / "errors.jsonl", sets)["x5"]
    assert (every["queries"], every["wrong_queries"], every["role"]) == (2, 1, 1)
    assert (wrong_only["queries"], wrong_only["wrong_queries"]) == (1, 1)
    lines = [orjson.loads(line) for line in (tmp_path / "predictions.jsonl").read_bytes().splitlines()]
    assert [line["source"] for line in lines] == ["gold:1", "gold:2"]
    assert lines[0]["errors"] == [] and lines[0]["gold_set"] == "x5"
    assert lines[1]["gold"] == [{"role": "brand", "start": 19, "end": 26, "text": "horizon", "type": "BRAND"}]
    assert lines[1]["predicted"] == [{"role": "attribute", "start": 19, "end": 26, "text": "horizon"}]
    assert [e["class"] for e in lines[1]["errors"]] == ["role"]
    errors_lines = (tmp_path / "errors.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["source"] for line in errors_lines] == ["gold:2"]


def test_a_write_that_fails_midway_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "predictions.jsonl"
    gold = [GoldQuery(QUERY, ()), GoldQuery(QUERY, ())]
    with pytest.raises(ValueError, match="zip"):  # one answer short: found after the first line is written
        write_query_lines(out, [("x5", gold, [Understanding([])])], every=True)
    assert list(tmp_path.iterdir()) == []
    out.write_text("the last good run\n")
    with pytest.raises(ValueError, match="zip"):
        write_query_lines(out, [("x5", gold, [Understanding([])])], every=True)
    assert out.read_text() == "the last good run\n" and list(tmp_path.iterdir()) == [out]
