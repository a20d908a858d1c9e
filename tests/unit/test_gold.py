"""Gold readers: the engine's JSON-lines labels and QueryNER split files, into one GoldQuery shape.

Good files read into spans that point at their text; every bad input is an InputError naming the
file, the line (or example) and the field; BIO edge cases follow the documented rules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.domain import Role, Tag
from services.errors import InputError
from services.gold import GoldQuery, read_qu_labels, read_queryner
from services.gold.queryner import LABEL_NAMES, spans_from_bio

SHARED_DATA = Path(
    os.environ.get("QU_SHARED_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)

# --- the engine's labels ----------------------------------------------------------------------


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def tag(role: str, start: int, end: int, text: str, canonical: str | None = None) -> dict[str, Any]:
    return {"role": role, "start": start, "end": end, "text": text, "canonical": canonical or text}


def test_labels_read_spans_sorted_categories_kinds_and_sources(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "events.labels.jsonl",
        [
            {
                "query": "Horizon 2% milk",
                "kind": "brand_type",
                # written out of order: the reader sorts them
                "spans": [tag("product", 11, 15, "milk"), tag("brand", 0, 7, "Horizon", "Horizon Organic")],
                "category": "dairy eggs > milk",
            },
            b"   ",  # a blank line is skipped, and line numbers still count it
            {"query": "frozen", "kind": "broad", "spans": [], "category": ["frozen"]},
            {"query": "quinoa", "tags": [tag("product", 0, 6, "quinoa")], "category": None},
        ],
    )
    gold = read_qu_labels(path)
    assert gold == [
        GoldQuery(
            "Horizon 2% milk",
            (Tag(Role.BRAND, 0, 7, "Horizon", "Horizon Organic"), Tag(Role.PRODUCT, 11, 15, "milk", "milk")),
            ("dairy eggs", "milk"),
            "brand_type",
            f"{path}:1",
        ),
        GoldQuery("frozen", (), ("frozen",), "broad", f"{path}:3"),
        GoldQuery("quinoa", (Tag(Role.PRODUCT, 0, 6, "quinoa", "quinoa"),), None, "", f"{path}:4"),
    ]


@pytest.mark.parametrize(
    ("line", "column", "says"),
    [
        pytest.param(b"{not json", None, "not JSON", id="not-json"),
        pytest.param(b"[1, 2]", "(line)", "expected a JSON object", id="not-an-object"),
        pytest.param(orjson.dumps({"spans": []}), "query", "missing or empty", id="no-query"),
        pytest.param(orjson.dumps({"query": "  "}), "query", "missing or empty", id="blank-query"),
        pytest.param(orjson.dumps({"query": "milk", "spans": "milk"}), "spans", "expected a list", id="spans-not-list"),
        pytest.param(
            orjson.dumps({"query": "milk", "spans": [{"role": "product", "start": 0}]}),
            "spans[0]",
            "not a tag",
            id="tag-missing-fields",
        ),
        pytest.param(
            orjson.dumps({"query": "milk", "spans": [tag("flavour", 0, 4, "milk")]}),
            "spans[0]",
            "not a tag",
            id="unknown-role",
        ),
        pytest.param(
            orjson.dumps({"query": "milk", "spans": [tag("product", 0, 5, "milk")]}),
            "spans[0]",
            "is not 'milk'",
            id="span-past-the-end",
        ),
        pytest.param(
            orjson.dumps({"query": "oat milk", "spans": [tag("product", 0, 3, "oak")]}),
            "spans[0]",
            "is not 'oak'",
            id="span-text-differs",
        ),
        pytest.param(
            orjson.dumps(
                {"query": "oat milk", "spans": [tag("attribute", 0, 3, "oat"), tag("product", 0, 8, "oat milk")]}
            ),
            "spans",
            "overlap",
            id="overlapping-spans",
        ),
        pytest.param(orjson.dumps({"query": "milk", "category": 7}), "category", "expected 'A > B'", id="bad-category"),
    ],
)
def test_every_bad_label_line_names_file_line_and_field(
    tmp_path: Path, line: bytes, column: str | None, says: str
) -> None:
    path = write_lines(tmp_path / "labels.jsonl", [{"query": "milk", "spans": [tag("product", 0, 4, "milk")]}, line])
    with pytest.raises(InputError) as caught:
        read_qu_labels(path)
    err = caught.value
    assert (err.source, err.row, err.column) == (str(path), 2, column)
    assert says in str(err)
    assert str(path) in str(err) and "row 2" in str(err)


def test_a_missing_labels_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the gold file") as caught:
        read_qu_labels(tmp_path / "nope.jsonl")
    assert caught.value.source == str(tmp_path / "nope.jsonl")


# --- QueryNER ---------------------------------------------------------------------------------

ID = {name: i for i, name in enumerate(LABEL_NAMES)}


def example(*pairs: tuple[str, str]) -> dict[str, Any]:
    """An example from (token, BIO label) pairs."""
    return {"tokens": [t for t, _ in pairs], "ner_tags": [ID[label] for _, label in pairs]}


def write_queryner(path: Path, examples: list[Any]) -> Path:
    path.write_bytes(orjson.dumps({"examples": examples}))
    return path


def roles(gold: GoldQuery) -> list[tuple[str, str, int, int]]:
    for span in gold.spans:
        assert gold.query[span.start : span.end] == span.text
    return [(s.role.value, s.text, s.start, s.end) for s in gold.spans]


def test_queryner_examples_map_to_roles_on_space_joined_tokens(tmp_path: Path) -> None:
    path = write_queryner(
        tmp_path / "validation.json",
        [
            example(("Kellogg's", "B-creator"), ("Special", "B-product_name"), ("K", "I-product_name"),
                    ("cereal", "B-core_product_type"), ("12", "B-quantity"), ("oz", "B-UoM")),
            example(("organic", "B-modifier"), ("bananas", "B-core_product_type")),
            example(("nothing", "O"), ("here", "O")),
        ],
    )  # fmt: skip
    gold = read_queryner(path)
    assert [g.query for g in gold] == ["Kellogg's Special K cereal 12 oz", "organic bananas", "nothing here"]
    assert roles(gold[0]) == [
        ("brand", "Kellogg's", 0, 9),
        ("attribute", "Special K", 10, 19),
        ("product", "cereal", 20, 26),
        ("attribute", "12", 27, 29),
        ("attribute", "oz", 30, 32),
    ]
    assert roles(gold[1]) == [("attribute", "organic", 0, 7), ("product", "bananas", 8, 15)]
    assert gold[2].spans == ()
    # QueryNER's own types ride along, one per span (a training-only head learns them).
    assert gold[0].span_types == ("creator", "product_name", "core_product_type", "quantity", "UoM")
    assert gold[1].span_types == ("modifier", "core_product_type") and gold[2].span_types == ()
    assert (gold[0].category, gold[0].kind, gold[1].source) == (None, "", f"{path}#1")


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([("men", "B-department"), ("shoes", "B-core_product_type")], [("product", "shoes", 4, 9)],
                     id="department-ignored"),
        pytest.param([("kids", "B-department"), ("room", "I-department")], [], id="multi-token-department-ignored"),
        pytest.param([("red", "I-color"), ("dress", "B-core_product_type")],
                     [("attribute", "red", 0, 3), ("product", "dress", 4, 9)], id="I-without-B-starts-a-span"),
        pytest.param([("dark", "O"), ("red", "I-color"), ("wine", "I-color")], [("attribute", "red wine", 5, 13)],
                     id="I-after-O-starts-one-span"),
        pytest.param([("nike", "B-creator"), ("air", "I-core_product_type")],
                     [("brand", "nike", 0, 4), ("product", "air", 5, 8)], id="I-of-another-type-starts-a-new-span"),
        pytest.param([("big", "B-modifier"), ("soft", "B-modifier")],
                     [("attribute", "big", 0, 3), ("attribute", "soft", 4, 8)], id="B-B-same-type-two-spans"),
        pytest.param([("a", "B-creator"), ("b", "I-creator"), ("c", "I-creator")], [("brand", "a b c", 0, 5)],
                     id="three-token-span"),
        pytest.param([("x", "B-color"), ("y", "O"), ("z", "I-color")],
                     [("attribute", "x", 0, 1), ("attribute", "z", 4, 5)], id="O-breaks-a-span"),
    ],
)  # fmt: skip
def test_bio_edge_cases(pairs: list[tuple[str, str]], expected: list[tuple[str, str, int, int]]) -> None:
    tokens = [t for t, _ in pairs]
    spans = spans_from_bio(tokens, [label for _, label in pairs])
    text = " ".join(tokens)
    assert [(s.role.value, s.text, s.start, s.end) for s in spans] == expected
    assert all(text[s.start : s.end] == s.text for s in spans)


@pytest.mark.parametrize(
    ("document", "row", "column", "says"),
    [
        pytest.param(b"{", None, None, "not JSON", id="not-json"),
        pytest.param(orjson.dumps([1]), None, None, "expected {", id="not-a-split-file"),
        pytest.param(orjson.dumps({"data": []}), None, None, "expected {", id="no-examples"),
        pytest.param(orjson.dumps({"examples": [example(("a", "O")), "x"]}), 1, "(example)", "expected an object",
                     id="example-not-object"),
        pytest.param(orjson.dumps({"examples": [{"tokens": [], "ner_tags": []}]}), 0, "tokens", "non-empty",
                     id="no-tokens"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a", ""], "ner_tags": [0, 0]}]}), 0, "tokens",
                     "non-empty strings", id="empty-token"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a", 3], "ner_tags": [0, 0]}]}), 0, "tokens",
                     "non-empty strings", id="token-not-string"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a", "b"], "ner_tags": [0]}]}), 0, "ner_tags",
                     "expected 2 label ids", id="length-mismatch"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a"]}]}), 0, "ner_tags", "expected 1 label ids",
                     id="no-labels"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a", "b"], "ner_tags": [0, 35]}]}), 0, "ner_tags[1]",
                     "35 is not a label id", id="label-id-out-of-range"),
        pytest.param(orjson.dumps({"examples": [{"tokens": ["a"], "ner_tags": ["B-color"]}]}), 0, "ner_tags[0]",
                     "is not a label id", id="label-not-an-id"),
    ],
)  # fmt: skip
def test_every_bad_queryner_input_names_file_example_and_field(
    tmp_path: Path, document: bytes, row: int | None, column: str | None, says: str
) -> None:
    path = tmp_path / "train.json"
    path.write_bytes(document)
    with pytest.raises(InputError) as caught:
        read_queryner(path)
    err = caught.value
    assert (err.source, err.row, err.column) == (str(path), row, column)
    assert says in str(err) and str(path) in str(err)


def test_a_missing_queryner_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the QueryNER file") as caught:
        read_queryner(tmp_path / "validation.json")
    assert caught.value.source == str(tmp_path / "validation.json")


def test_the_shared_validation_split_reads_whole() -> None:
    path = SHARED_DATA / "queryner" / "validation.json"
    if not path.is_file():
        pytest.skip(f"{path} is not on this machine")
    gold = read_queryner(path)
    assert len(gold) == 871
    assert all(g.query[s.start : s.end] == s.text for g in gold for s in g.spans)
    assert {s.role for g in gold for s in g.spans} == set(Role)
