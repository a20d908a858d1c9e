"""The training-only type head: QueryNER's types survive normalization and become word labels; curriculum is ignored."""

from __future__ import annotations

import pytest
import torch

from services.domain import Role, Tag
from services.gold import GoldQuery
from services.settings import Settings
from services.student.bio import IGNORE, load_tokenizer
from services.student.training.data import Example, MappingStats, normalize_gold
from services.student.training.type_head import TYPE_LABELS, TypeHead, type_labels


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_tokenizer(Settings().resolved_embedding_model_path() / "tokenizer.json")


def typed(query: str, *spans: tuple[Role, str, str]) -> GoldQuery:
    tags = []
    for role, text, _ in spans:
        start = query.index(text)
        tags.append(Tag(role, start, start + len(text), text, text))
    return GoldQuery(query, tuple(tags), span_types=tuple(kind for _, _, kind in spans))


def test_types_follow_their_spans_through_normalization() -> None:
    gold = typed("Red Cotton T-Shirt", (Role.ATTRIBUTE, "Red", "color"), (Role.ATTRIBUTE, "Cotton", "material"),
                 (Role.PRODUCT, "T-Shirt", "core_product_type"))  # fmt: skip
    example = normalize_gold(gold, MappingStats())
    assert example is not None
    assert [(t.text, kind) for t, kind in zip(example.spans, example.types, strict=True)] == [
        ("red", "color"), ("cotton", "material"), ("t shirt", "core_product_type"),
    ]  # fmt: skip
    assert Example.from_json(example.to_json()) == example


def test_adjacent_attributes_of_two_types_get_two_b_labels(tokenizer) -> None:  # type: ignore[no-untyped-def]
    example = normalize_gold(
        typed("red cotton shirt", (Role.ATTRIBUTE, "red", "color"), (Role.ATTRIBUTE, "cotton", "material")),
        MappingStats(),
    )
    assert example is not None
    untyped = Example("red cotton shirt", example.spans)  # a curriculum example: roles only
    batch = [example, untyped]
    labels = type_labels(tokenizer.encode_batch([e.text for e in batch]), batch)
    names = [TYPE_LABELS[i] for i in labels[0].tolist() if i != IGNORE]
    assert names == ["B-color", "B-material", "O"]
    assert set(labels[1].tolist()) == {IGNORE}


def test_a_batch_without_types_adds_no_loss() -> None:
    head = TypeHead(8)
    hidden = torch.randn(2, 3, 8)
    assert head.loss(hidden, torch.full((2, 3), IGNORE)).item() == 0.0
    labelled = torch.tensor([[IGNORE, 1, 0], [IGNORE, IGNORE, IGNORE]])
    assert head.loss(hidden, labelled).item() > 0.0
