"""Character-span BIO JSON lines (public NER query sets) read as the engine's roles: merging the words of a
span, an I- with no B- before it, labels the map leaves out, and bad spans named with their file, line and field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.domain import Role
from services.errors import InputError
from services.evaluation.run import GoldFormat, ignored_labels, load_gold
from services.gold import parse_label_map, read_bio_spans

SHARED_DATA = Path(
    os.environ.get("QU_SHARED_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)
ROLES = {"TYPE": Role.PRODUCT, "BRAND": Role.BRAND, "VOLUME": Role.ATTRIBUTE}


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def read_one(tmp_path: Path, text: str, labels: list[list[Any]]) -> list[tuple[str, int, int, str, str]]:
    [gold] = read_bio_spans(write_lines(tmp_path / "gold.jsonl", [{"text": text, "labels": labels}]), ROLES)
    assert len(gold.span_types) == len(gold.spans)
    return [(t.role.value, t.start, t.end, t.text, kind) for t, kind in zip(gold.spans, gold.span_types, strict=True)]


def test_b_and_i_words_merge_into_one_span_from_first_start_to_last_end(tmp_path: Path) -> None:
    text = "сироп кленовый  umka 0.5 л"
    labels = [[0, 5, "B-TYPE"], [6, 14, "I-TYPE"], [16, 20, "B-BRAND"], [21, 24, "B-VOLUME"], [25, 26, "I-VOLUME"]]
    assert read_one(tmp_path, text, labels) == [
        ("product", 0, 14, "сироп кленовый", "TYPE"),
        ("brand", 16, 20, "umka", "BRAND"),
        ("attribute", 21, 26, "0.5 л", "VOLUME"),
    ]


def test_words_are_read_in_order_of_their_start(tmp_path: Path) -> None:
    assert read_one(tmp_path, "milk oat", [[5, 8, "I-TYPE"], [0, 4, "B-TYPE"]]) == [
        ("product", 0, 8, "milk oat", "TYPE")
    ]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        pytest.param([[0, 4, "I-TYPE"], [5, 8, "I-TYPE"]], [("product", 0, 8, "milk oat", "TYPE")], id="first-word"),
        pytest.param(
            [[0, 4, "B-BRAND"], [5, 8, "I-TYPE"]],
            [("brand", 0, 4, "milk", "BRAND"), ("product", 5, 8, "oat", "TYPE")],
            id="after-another-label",
        ),
        pytest.param([[0, 4, "B-TYPE"], [5, 8, "B-TYPE"]], [("product", 0, 4, "milk", "TYPE"),
                     ("product", 5, 8, "oat", "TYPE")], id="b-after-b-is-a-new-span"),
    ],
)  # fmt: skip
def test_an_i_word_without_its_b_starts_a_span(
    tmp_path: Path, labels: list[list[Any]], expected: list[tuple[str, int, int, str, str]]
) -> None:
    assert read_one(tmp_path, "milk oat", labels) == expected


def test_an_o_word_ends_a_span(tmp_path: Path) -> None:
    assert read_one(tmp_path, "milk no fat", [[0, 4, "B-TYPE"], [5, 7, "O"], [8, 11, "I-TYPE"]]) == [
        ("product", 0, 4, "milk", "TYPE"),
        ("product", 8, 11, "fat", "TYPE"),
    ]


def test_unmapped_labels_are_read_as_o_and_counted(tmp_path: Path) -> None:
    rows = [
        {"text": "молоко 3.2%", "labels": [[0, 6, "B-TYPE"], [7, 11, "B-PERCENT"]]},
        # PERCENT between two TYPE words: the second TYPE word does not continue the first span.
        {"text": "молоко 2.5% ультрапастеризованное", "labels": [[0, 6, "B-TYPE"], [7, 11, "B-PERCENT"],
                                                              [12, 33, "I-TYPE"]]},
        {"text": "кефир", "labels": [[0, 5, "B-PERCENT"]]},
    ]  # fmt: skip
    gold = read_bio_spans(write_lines(tmp_path / "gold.jsonl", rows), ROLES)
    assert [[t.text for t in g.spans] for g in gold] == [["молоко"], ["молоко", "ультрапастеризованное"], []]
    assert [g.ignored_types for g in gold] == [("PERCENT",), ("PERCENT",), ("PERCENT",)]
    assert ignored_labels(gold) == {"PERCENT": 3}
    assert [g.source for g in gold] == [f"{tmp_path / 'gold.jsonl'}:{n}" for n in (1, 2, 3)]


def test_an_o_word_past_the_end_is_only_checked_for_its_shape(tmp_path: Path) -> None:
    # The published train split carries such words ({"text": "lnd", "labels": [[1, 4, "O"]]}).
    assert read_one(tmp_path, "lnd", [[1, 4, "O"]]) == []


@pytest.mark.parametrize(
    ("labels", "column", "says"),
    [
        pytest.param([[0, 9, "B-TYPE"]], "labels[0]", "does not lie within the text", id="past-the-end"),
        pytest.param([[-1, 3, "B-TYPE"]], "labels[0]", "does not lie within the text", id="negative"),
        pytest.param([[2, 2, "B-TYPE"]], "labels[0]", "does not lie within the text", id="empty"),
        pytest.param([[0, 4, "B-TYPE"], [3, 8, "I-TYPE"]], "labels[1]", "overlaps labels[0]", id="overlap"),
        pytest.param([[5, 8, "B-BRAND"], [0, 6, "B-TYPE"]], "labels[0]", "overlaps labels[1]", id="overlap-unsorted"),
        pytest.param([[0, 4, "TYPE"]], "labels[0]", "not a BIO label", id="no-prefix"),
        pytest.param([[0, 4, "B-"]], "labels[0]", "not a BIO label", id="no-type"),
        pytest.param([[0, "4", "B-TYPE"]], "labels[0]", "expected [start, end, label]", id="string-offset"),
        pytest.param([[0, 4]], "labels[0]", "expected [start, end, label]", id="two-items"),
        pytest.param({"0": "B-TYPE"}, "labels", "expected a list", id="not-a-list"),
    ],
)
def test_every_bad_line_names_file_line_and_field(tmp_path: Path, labels: Any, column: str, says: str) -> None:
    good = {"text": "milk", "labels": [[0, 4, "B-TYPE"]]}
    path = write_lines(tmp_path / "gold.jsonl", [good, {"text": "milk oat", "labels": labels}])
    with pytest.raises(InputError) as caught:
        read_bio_spans(path, ROLES)
    err = caught.value
    assert (err.source, err.row, err.column) == (str(path), 2, column)
    assert says in str(err) and str(path) in str(err) and "row 2" in str(err)


@pytest.mark.parametrize(
    ("line", "column"),
    [
        pytest.param(orjson.dumps({"labels": []}), "text", id="no-text"),
        pytest.param(orjson.dumps({"text": "  ", "labels": []}), "text", id="blank-text"),
        pytest.param(orjson.dumps(["milk"]), "(line)", id="not-an-object"),
        pytest.param(b"{not json", None, id="not-json"),
    ],
)
def test_a_bad_record_is_named(tmp_path: Path, line: bytes, column: str | None) -> None:
    path = write_lines(tmp_path / "gold.jsonl", [line])
    with pytest.raises(InputError) as caught:
        read_bio_spans(path, ROLES)
    assert (caught.value.row, caught.value.column) == (1, column)


def test_label_maps() -> None:
    assert parse_label_map("TYPE=product, BRAND=Brand,VOLUME=attribute,PERCENT=attribute") == {
        "TYPE": Role.PRODUCT,
        "BRAND": Role.BRAND,
        "VOLUME": Role.ATTRIBUTE,
        "PERCENT": Role.ATTRIBUTE,
    }
    for bad, says in [
        ("TYPE", "expected LABEL=ROLE"),
        ("TYPE=colour", "not a role"),
        ("B-TYPE=product", "without its B-/I- prefix"),
        ("", "empty label map"),
    ]:
        with pytest.raises(ValueError, match=says):
            parse_label_map(bad)


def test_load_gold_wants_a_label_map_with_spans_and_only_there(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "gold.jsonl", [{"text": "milk", "labels": [[0, 4, "B-TYPE"]]}] * 3)
    with pytest.raises(InputError, match="needs a label map"):
        load_gold(path, GoldFormat.SPANS)
    with pytest.raises(InputError, match="takes no label map"):
        load_gold(path, GoldFormat.QU, label_map=ROLES)
    assert len(load_gold(path, GoldFormat.SPANS, label_map=ROLES, limit=2)) == 2


@pytest.mark.skipif(
    not (SHARED_DATA / "catalogs" / "queries-ru-x5" / "val_lct.jsonl").exists(), reason="no shared X5 query set"
)
def test_the_published_x5_validation_set_reads() -> None:
    roles = parse_label_map("TYPE=product,BRAND=brand,VOLUME=attribute,PERCENT=attribute")
    gold = read_bio_spans(SHARED_DATA / "catalogs" / "queries-ru-x5" / "val_lct.jsonl", roles)
    assert len(gold) == 4123
    assert all(g.query[t.start : t.end] == t.text for g in gold for t in g.spans)
    assert {kind for g in gold for kind in g.span_types} <= set(roles) and ignored_labels(gold) == {}
