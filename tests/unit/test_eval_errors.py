"""Per-query span errors, each gold span and prediction classed once."""

from __future__ import annotations

from services.domain import Role, Tag, Understanding
from services.evaluation.errors import query_errors
from services.gold import GoldQuery

QUERY = "organic whole milk horizon"


def tag(role: Role, start: int, end: int) -> Tag:
    return Tag(role, start, end, QUERY[start:end], QUERY[start:end])


def classes(gold: list[Tag], predicted: list[Tag]) -> list[str]:
    found = query_errors(GoldQuery(QUERY, tuple(gold)), Understanding(predicted))
    return [] if found is None else [e["class"] for e in found["errors"]]


def test_a_right_answer_has_no_errors() -> None:
    spans = [tag(Role.ATTRIBUTE, 0, 7), tag(Role.PRODUCT, 8, 18)]
    assert classes(spans, spans) == []


def test_each_kind_of_error_is_named() -> None:
    gold = [tag(Role.ATTRIBUTE, 0, 7), tag(Role.PRODUCT, 14, 18), tag(Role.BRAND, 19, 26)]
    predicted = [tag(Role.PRODUCT, 0, 7), tag(Role.PRODUCT, 8, 18), tag(Role.ATTRIBUTE, 8, 13)]
    # organic: another role; milk vs whole milk: boundary; horizon: missed; nothing left over.
    assert classes(gold, predicted) == ["wrong_role", "boundary", "missed", "spurious"]


def test_a_prediction_with_no_gold_near_it_is_spurious() -> None:
    assert classes([tag(Role.PRODUCT, 14, 18)], [tag(Role.PRODUCT, 14, 18), tag(Role.BRAND, 19, 26)]) == ["spurious"]
