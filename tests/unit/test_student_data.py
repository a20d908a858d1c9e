"""The student's examples: gold spans mapped onto normalized queries, the hash split, and the sources it reads."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.domain import Role, Tag
from services.gold import GoldQuery
from services.student.training.data import (
    Example,
    MappingStats,
    StudentDataError,
    build_data,
    held_out,
    normalize_gold,
    read_curriculum,
    read_examples,
    read_queryner_split,
    write_examples,
)
from tests.fixtures.student import tiny_gold


def gold(query: str, *spans: tuple[Role, str]) -> GoldQuery:
    tags = []
    for role, text in spans:
        start = query.index(text)
        tags.append(Tag(role, start, start + len(text), text, text))
    return GoldQuery(query, tuple(tags))


def mapped(query: str, *spans: tuple[Role, str]) -> tuple[str, list[tuple[Role, str, int, int]], MappingStats]:
    stats = MappingStats()
    example = normalize_gold(gold(query, *spans), stats)
    assert example is not None
    for t in example.spans:
        assert example.text[t.start : t.end] == t.text == t.canonical
    return example.text, [(t.role, t.text, t.start, t.end) for t in example.spans], stats


@pytest.mark.parametrize(
    ("query", "spans", "text", "expected"),
    [
        (
            "men’s dress socks",
            [(Role.ATTRIBUTE, "men’s"), (Role.PRODUCT, "dress socks")],
            "mens dress socks",
            [(Role.ATTRIBUTE, "mens", 0, 4), (Role.PRODUCT, "dress socks", 5, 16)],
        ),
        ("Ben & Jerrys", [(Role.BRAND, "Ben & Jerrys")], "ben and jerrys", [(Role.BRAND, "ben and jerrys", 0, 14)]),
        (
            "l.o.l lady diva",
            [(Role.BRAND, "l.o.l"), (Role.PRODUCT, "lady diva")],
            "l o l lady diva",
            [(Role.BRAND, "l o l", 0, 5), (Role.PRODUCT, "lady diva", 6, 15)],
        ),
        (
            "2ml syringe",
            [(Role.ATTRIBUTE, "2ml"), (Role.PRODUCT, "syringe")],
            "2 ml syringe",
            [(Role.ATTRIBUTE, "2 ml", 0, 4), (Role.PRODUCT, "syringe", 5, 12)],
        ),
        (
            "boys robes size 6-7",
            [(Role.PRODUCT, "robes"), (Role.ATTRIBUTE, "size 6-7")],
            "boys robes size 6 7",
            [(Role.PRODUCT, "robes", 5, 10), (Role.ATTRIBUTE, "size 6 7", 11, 19)],
        ),
    ],
)
def test_spans_follow_the_characters_normalization_changes(
    query: str, spans: list[tuple[Role, str]], text: str, expected: list[tuple[Role, str, int, int]]
) -> None:
    got_text, got_spans, stats = mapped(query, *spans)
    assert (got_text, got_spans) == (text, expected)
    assert stats.dropped_spans == 0


def test_a_span_normalization_erases_is_dropped_and_counted() -> None:
    text, spans, stats = mapped("milk - 2 pack", (Role.PRODUCT, "milk"), (Role.ATTRIBUTE, "-"))
    assert text == "milk 2 pack"
    assert spans == [(Role.PRODUCT, "milk", 0, 4)]
    assert (stats.spans, stats.dropped_spans) == (2, 1)


def test_a_query_that_normalizes_to_nothing_is_skipped() -> None:
    stats = MappingStats()
    assert normalize_gold(GoldQuery("'''", ()), stats) is None
    assert stats.empty_queries == 1


def test_the_split_is_a_stable_hash_and_no_query_is_on_both_sides() -> None:
    queries = [g.query for g in tiny_gold()]
    first = [held_out(q, 20) for q in queries]
    assert first == [held_out(q, 20) for q in queries]
    assert 0 < sum(first) < len(queries)
    assert not any(held_out(q, 0) for q in queries) and all(held_out(q, 100) for q in queries)

    curriculum = [*tiny_gold(), gold("Acme Organic Milk", (Role.BRAND, "Acme"))]  # a repeat once normalized
    validation = [gold("acme low fat pasta", (Role.BRAND, "acme"))]
    queryner_train = [*validation, gold("fresh basil", (Role.PRODUCT, "basil"))]
    data = build_data(curriculum, queryner_train, validation, heldout_percent=20)
    train = {e.text for e in data.train}
    assert not train & {e.text for e in data.heldout}
    assert not train & {e.text for e in data.queryner_validation}
    assert "fresh basil" in train
    assert len(train) == len(data.train)
    # "acme low fat pasta" is in the tiny curriculum too: where the hash puts it in training, validation wins.
    overlap = {} if held_out("acme low fat pasta", 20) else {"curriculum_in_heldout": 1}
    assert data.stats["excluded_from_train"] == {"queryner_train_in_heldout": 1, **overlap}


def test_queryner_test_split_is_never_read(tmp_path: Path) -> None:
    (tmp_path / "test.json").write_text('{"examples": []}')
    with pytest.raises(StudentDataError, match="never read"):
        read_queryner_split(tmp_path, "test.json")
    with pytest.raises(StudentDataError, match="QU_STUDENT_QUERYNER_DIR"):
        read_queryner_split(tmp_path, "train.json")


def test_the_curriculum_may_be_gold_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    row = {
        "query": "organic milk",
        "spans": [{"role": "product", "start": 8, "end": 12, "text": "milk", "canonical": "milk"}],
    }
    path.write_bytes(orjson.dumps(row) + b"\n")
    assert [(g.query, [t.text for t in g.spans]) for g in read_curriculum(path)] == [("organic milk", ["milk"])]
    with pytest.raises(StudentDataError, match="--no-curriculum"):
        read_curriculum(tmp_path / "missing")


def test_examples_round_trip_through_json_lines(tmp_path: Path) -> None:
    examples = [Example("acme milk", (Tag(Role.BRAND, 0, 4, "acme", "acme"),), "x:1"), Example("pasta", ())]
    write_examples(tmp_path / "e.jsonl", examples)
    assert read_examples(tmp_path / "e.jsonl") == examples


def test_the_version_string_names_the_run_and_both_precisions() -> None:
    from services.student.export.exporter import version_string

    assert version_string("20261126T000018Z-27cf49", "int8") == "student-minilm-lora.20261126T000018Z-27cf49.int8"
    assert version_string("r", "fp32", "fp32") == "student-minilm-lora.r.fp32"
    assert version_string("r", "int8", "int8") == "student-minilm-lora.r.int8.embed-int8"


def test_an_epoch_repeats_queryner_examples_as_asked() -> None:
    curriculum = [gold("acme organic milk", (Role.BRAND, "acme")), gold("fresh pasta", (Role.PRODUCT, "pasta"))]
    queryner_train = [gold("red cotton shirt", (Role.PRODUCT, "shirt"))]
    data = build_data(curriculum, queryner_train, [], heldout_percent=0)
    assert data.train_origins == ["curriculum", "curriculum", "queryner_train"]
    assert data.epoch_indices({}) == [0, 1, 2]
    assert data.epoch_indices({"queryner_train": 3}) == [0, 1, 2, 2, 2]
