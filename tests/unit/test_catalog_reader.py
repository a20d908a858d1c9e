"""read_catalog: every bad row is named by file, row and column; good rows come back as products."""

from __future__ import annotations

import csv
import gzip
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.catalog.model import Product
from services.catalog.reader import REQUIRED_COLUMNS, SkippedRow, read_catalog
from services.errors import InputError, QuError

HEADER = ["product_id", "name", "brand", "category_path", "attributes", "popularity"]
GOOD_ROW = ["1", "Organic Whole Milk, 1 Gallon", "Horizon Organic", "dairy eggs > milk", "organic", "12.5"]
GOOD_PRODUCT = Product(
    "1", "Organic Whole Milk, 1 Gallon", "Horizon Organic", ("dairy eggs", "milk"), ("organic",), 12.5
)


def row(**cells: str) -> list[str]:
    """A valid row with id "2" and some cells replaced."""
    base = dict(zip(HEADER, ["2", "Sourdough Bread", "", "bakery > bread", "", "3"], strict=True))
    base.update(cells)
    return [base[c] for c in HEADER]


def assert_names(err: InputError, path: Path, row: int | None, column: str | None) -> None:
    """The error names the file, the row and the column, as attributes and in its message."""
    assert err.source == str(path)
    assert err.row == row
    assert err.column == column
    message = str(err)
    assert message.startswith(str(path))
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column {column!r}" in message
    assert isinstance(err, QuError)


# (cells of row 2, the column, a pattern of the reason)
BAD_ROWS = [
    pytest.param(row(product_id=""), "product_id", "missing product_id", id="missing-id"),
    pytest.param(row(product_id="   "), "product_id", "missing product_id", id="blank-id"),
    pytest.param(row(name=""), "name", "missing name", id="missing-name"),
    pytest.param(row(name=" \t "), "name", "missing name", id="blank-name"),
    pytest.param(row(category_path=""), "category_path", "empty", id="empty-path"),
    pytest.param(row(category_path="   "), "category_path", "empty", id="blank-path"),
    pytest.param(row(category_path="a >  > b"), "category_path", "empty level", id="empty-level"),
    pytest.param(row(category_path="a > b >"), "category_path", "empty level", id="trailing-separator"),
    pytest.param(row(category_path="> a"), "category_path", "empty level", id="leading-separator"),
    pytest.param(row(product_id="1"), "product_id", "duplicate product_id '1'", id="duplicate-id"),
    pytest.param(row(popularity="abc"), "popularity", "unreadable number 'abc'", id="popularity-abc"),
    pytest.param(row(popularity="12,5"), "popularity", "unreadable number", id="popularity-decimal-comma"),
    pytest.param(row(popularity="-1"), "popularity", "finite number >= 0", id="popularity-negative"),
    pytest.param(row(popularity="-0.001"), "popularity", "finite number >= 0", id="popularity-small-negative"),
    pytest.param(row(popularity="nan"), "popularity", "finite number >= 0", id="popularity-nan"),
    pytest.param(row(popularity="NaN"), "popularity", "finite number >= 0", id="popularity-NaN"),
    pytest.param(row(popularity="inf"), "popularity", "finite number >= 0", id="popularity-inf"),
]


@pytest.mark.parametrize(("bad", "column", "reason"), BAD_ROWS)
def test_bad_csv_row_names_file_row_and_column(
    tmp_path: Path, write_csv: Any, bad: list[str], column: str, reason: str
) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [GOOD_ROW, bad, row(product_id="3")])
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 2, column)
    assert re.search(reason, caught.value.reason)


@pytest.mark.parametrize(("bad", "column", "reason"), BAD_ROWS)
def test_bad_csv_row_is_skipped_with_its_reason(
    tmp_path: Path, write_csv: Any, bad: list[str], column: str, reason: str
) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [GOOD_ROW, bad, row(product_id="3")])
    result = read_catalog(path, skip_invalid=True)
    assert [p.product_id for p in result.products] == ["1", "3"]
    assert len(result.skipped) == 1
    skipped = result.skipped[0]
    assert (skipped.row, skipped.column) == (2, column)
    assert re.search(reason, skipped.reason)
    assert result.rows_read == 3


def test_row_numbers_count_records_not_lines(tmp_path: Path, write_csv: Any) -> None:
    # A quoted name with a newline and a comma is one record; the header is not counted.
    path = write_csv(
        tmp_path / "catalog.csv",
        HEADER,
        [row(product_id="1", name="Milk,\nwhole"), row(product_id="2", name="Eggs"), row(product_id="3", name="")],
    )
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 3, "name")


def test_bad_row_after_many_good_rows(tmp_path: Path, write_csv: Any) -> None:
    rows = [row(product_id=str(i)) for i in range(1, 10_001)]
    rows[9_876] = row(product_id="9877", category_path="snacks >  > chips")
    path = write_csv(tmp_path / "catalog.csv", HEADER, rows)
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 9_877, "category_path")


def test_missing_required_column_lists_the_header(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", ["product_id", "title", "category_path"], [["1", "Milk", "dairy"]])
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    err = caught.value
    assert_names(err, path, None, None)
    assert "missing column(s) name, brand" in err.reason
    assert "the header has product_id, title, category_path" in err.reason
    for column in REQUIRED_COLUMNS:
        assert column in err.reason


def test_header_cells_are_stripped_and_order_and_extra_columns_do_not_matter(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(
        tmp_path / "catalog.csv",
        [" category_path ", "aisle_id", "name", " product_id", "brand "],
        [["dairy eggs > milk", "84", "Whole Milk", "7", "Horizon"]],
    )
    assert read_catalog(path).products == [Product("7", "Whole Milk", "Horizon", ("dairy eggs", "milk"))]


@pytest.mark.parametrize("name", ["catalog.tsv", "catalog.json", "catalog.gz", "catalog.csv.bz2", "catalog"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(",".join(HEADER) + "\n" + ",".join(GOOD_ROW) + "\n")
    with pytest.raises(InputError, match="unknown catalog format") as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(InputError, match="no such file") as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)


def test_directory_is_not_a_catalog(tmp_path: Path) -> None:
    path = tmp_path / "dir.csv"
    path.mkdir()
    with pytest.raises(InputError, match="no such file"):
        read_catalog(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"")
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)
    assert "the header has nothing" in caught.value.reason


def test_header_only_file(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [])
    with pytest.raises(InputError, match="no rows") as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)


def test_header_only_file_with_skip_invalid(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [])
    with pytest.raises(InputError, match="no rows"):
        read_catalog(path, skip_invalid=True)


def _latin1_catalog(tmp_path: Path, rows: int, bad_row: int) -> Path:
    lines = [",".join(HEADER)]
    for i in range(1, rows + 1):
        name = "Café au lait" if i == bad_row else f"Product number {i} with a realistic length name"
        lines.append(f"{i},{name},Brand,beverages > coffee,,1")
    path = tmp_path / "catalog.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))  # "é" is one byte 0xE9: not UTF-8
    return path


@pytest.mark.parametrize(("rows", "bad_row"), [(3, 2), (1000, 500)], ids=["small", "large"])
def test_invalid_utf8_is_an_input_error(tmp_path: Path, rows: int, bad_row: int) -> None:
    path = _latin1_catalog(tmp_path, rows, bad_row)
    for skip in (False, True):
        with pytest.raises(InputError, match="UTF-8") as caught:
            read_catalog(path, skip_invalid=skip)
        assert caught.value.source == str(path)


@pytest.mark.parametrize(("rows", "bad_row"), [(3, 2), (1000, 500)], ids=["small", "large"])
def test_invalid_utf8_names_its_row(tmp_path: Path, rows: int, bad_row: int) -> None:
    path = _latin1_catalog(tmp_path, rows, bad_row)
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert caught.value.row == bad_row


def test_invalid_utf8_in_the_header(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_bytes(b"product_id,n\xe4me,brand,category_path\n1,Milk,,dairy\n")
    with pytest.raises(InputError, match="header is not valid UTF-8") as caught:
        read_catalog(path)
    assert caught.value.source == str(path)


def test_row_with_too_many_cells(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [GOOD_ROW, [*row(), "surplus"], row(product_id="3")])
    with pytest.raises(InputError, match="row has 7 cells, the header 6") as caught:
        read_catalog(path)
    err = caught.value
    assert (err.source, err.row) == (str(path), 2)
    assert str(err).startswith(f"{path}, row 2")


def test_row_with_too_many_cells_is_skipped(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [GOOD_ROW, [*row(), "surplus"], row(product_id="3")])
    result = read_catalog(path, skip_invalid=True)
    assert [p.product_id for p in result.products] == ["1", "3"]
    assert [s.row for s in result.skipped] == [2]


def test_field_over_the_csv_limit_names_its_row(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [GOOD_ROW, row(name="x" * 200_000), row(product_id="3")])
    with pytest.raises(InputError, match="malformed CSV") as caught:
        read_catalog(path)
    assert (caught.value.source, caught.value.row) == (str(path), 2)


def test_short_row_without_the_optional_cells_is_read(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text(",".join(HEADER) + "\n1,Whole Milk,Horizon,dairy eggs > milk\n", encoding="utf-8")
    assert read_catalog(path).products == [Product("1", "Whole Milk", "Horizon", ("dairy eggs", "milk"))]


# --- what good rows become --------------------------------------------------------------------


def test_good_rows_become_products(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(
        tmp_path / "catalog.csv",
        HEADER,
        [
            GOOD_ROW,
            ["2", "  Sourdough Bread ", "", "bakery", "", ""],
            ["3", "Cookies", " Oreo ", " snacks >cookies cakes>  sandwich ", " vegan ;; gluten free ; ", " 1e3 "],
            ["4", "Ice", "Brand", "frozen > ice", "single", "0"],
        ],
    )
    result = read_catalog(path)
    assert result.source == str(path)
    assert result.rows_read == 4
    assert result.skipped == []
    assert result.products == [
        GOOD_PRODUCT,
        Product("2", "Sourdough Bread", "", ("bakery",), (), 0.0),
        Product("3", "Cookies", "Oreo", ("snacks", "cookies cakes", "sandwich"), ("vegan", "gluten free"), 1000.0),
        Product("4", "Ice", "Brand", ("frozen", "ice"), ("single",), 0.0),
    ]


def test_optional_columns_may_be_absent(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "c.csv", list(REQUIRED_COLUMNS), [["1", "Milk", "", "dairy eggs > milk"]])
    assert read_catalog(path).products == [Product("1", "Milk", "", ("dairy eggs", "milk"), (), 0.0)]


def test_csv_with_a_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    lines = [",".join(HEADER), '1,"Organic Whole Milk, 1 Gallon",Horizon Organic,dairy eggs > milk,organic,12.5']
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert read_catalog(path).products == [GOOD_PRODUCT]


@pytest.mark.parametrize("name", ["catalog.csv.gz", "CATALOG.CSV.GZ", "my.catalog.v2.csv.gz"])
def test_gzipped_csv(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    text = ",".join(HEADER) + "\n" + ",".join(GOOD_ROW).replace(", 1 Gallon", "") + "\n"
    path.write_bytes(gzip.compress(text.encode()))
    product = read_catalog(path).products[0]
    assert (product.product_id, product.name, product.attributes, product.popularity) == (
        "1",
        "Organic Whole Milk",
        ("organic",),
        12.5,
    )


def test_gzipped_csv_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv.gz"
    lines = [",".join(HEADER), ",".join(GOOD_ROW).replace(", 1 Gallon", ""), "2,,,bakery,,"]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 2, "name")


# --- skip_invalid -----------------------------------------------------------------------------


def test_skip_invalid_keeps_good_rows_and_reports_every_skipped_one(tmp_path: Path, write_csv: Any) -> None:
    rows = [
        GOOD_ROW,  # 1
        row(product_id=""),  # 2
        row(product_id="3", name=""),  # 3
        row(product_id="4"),  # 4 good
        row(product_id="5", category_path="a >  > b"),  # 5
        row(product_id="1"),  # 6 duplicate of row 1
        row(product_id="7", popularity="abc"),  # 7
        row(product_id="8", popularity="-2"),  # 8
        row(product_id="9", category_path=""),  # 9
        row(product_id="10"),  # 10 good
    ]
    path = write_csv(tmp_path / "catalog.csv", HEADER, rows)
    result = read_catalog(path, skip_invalid=True)
    assert [p.product_id for p in result.products] == ["1", "4", "10"]
    assert result.products[0] == GOOD_PRODUCT
    assert [(s.row, s.column) for s in result.skipped] == [
        (2, "product_id"),
        (3, "name"),
        (5, "category_path"),
        (6, "product_id"),
        (7, "popularity"),
        (8, "popularity"),
        (9, "category_path"),
    ]
    assert all(isinstance(s, SkippedRow) and s.reason for s in result.skipped)
    assert "duplicate" in result.skipped[3].reason
    assert result.rows_read == 10 == len(result.products) + len(result.skipped)
    by_reason = result.skipped_by_reason()
    assert sum(by_reason.values()) == len(result.skipped)
    assert by_reason["product_id: missing product_id"] == 1
    assert by_reason["name: missing name"] == 1
    assert by_reason["category_path: the category path is empty"] == 1


def test_skip_invalid_with_every_row_bad_returns_no_products(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", HEADER, [row(product_id=""), row(name="")])
    result = read_catalog(path, skip_invalid=True)
    assert result.products == []
    assert result.rows_read == 2
    assert [s.row for s in result.skipped] == [1, 2]


def test_skip_invalid_does_not_hide_file_level_errors(tmp_path: Path, write_csv: Any) -> None:
    path = write_csv(tmp_path / "catalog.csv", ["product_id", "name"], [["1", "Milk"]])
    with pytest.raises(InputError, match="missing column"):
        read_catalog(path, skip_invalid=True)


def test_skipped_rows_are_counted_by_kind_of_problem(tmp_path: Path, write_csv: Any) -> None:
    rows = [
        GOOD_ROW,
        row(product_id="2"),
        row(product_id="1"),
        row(product_id="2"),
        row(product_id="5", popularity="abc"),
        row(product_id="6", popularity="xyz"),
        row(product_id="7", category_path="a >  > b"),
        row(product_id="8", category_path="c > > d"),
    ]
    path = write_csv(tmp_path / "catalog.csv", HEADER, rows)
    result = read_catalog(path, skip_invalid=True)
    assert len(result.skipped) == 6
    assert sorted(result.skipped_by_reason().values()) == [2, 2, 2]


_KINDS = {
    "good": {},
    "no_id": {"product_id": ""},
    "no_name": {"name": ""},
    "bad_path": {"category_path": "x >> y"},
    "bad_popularity": {"popularity": "many"},
    "negative": {"popularity": "-3"},
}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=25))
def test_counts_add_up(kinds: list[str]) -> None:
    rows = [row(**{"product_id": str(i), **_KINDS[kind]}) for i, kind in enumerate(kinds, start=1)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            csv.writer(handle).writerows([HEADER, *rows])
        result = read_catalog(path, skip_invalid=True)
    assert result.rows_read == len(kinds) == len(result.products) + len(result.skipped)
    assert [p.product_id for p in result.products] == [str(i) for i, k in enumerate(kinds, 1) if k == "good"]
    assert [s.row for s in result.skipped] == [i for i, k in enumerate(kinds, 1) if k != "good"]
    assert sum(result.skipped_by_reason().values()) == len(result.skipped)


# --- Parquet ----------------------------------------------------------------------------------


def write_parquet(path: Path, columns: dict[str, Any]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def parquet_columns(n: int = 3) -> dict[str, list[Any]]:
    return {
        "product_id": [str(i) for i in range(1, n + 1)],
        "name": [f"Product {i}" for i in range(1, n + 1)],
        "brand": ["Acme"] * n,
        "category_path": ["pantry > baking"] * n,
        "popularity": [float(i) for i in range(1, n + 1)],
    }


PARQUET_BAD = [
    pytest.param("product_id", None, "product_id", "missing product_id", id="null-id"),
    pytest.param("product_id", " ", "product_id", "missing product_id", id="blank-id"),
    pytest.param("product_id", "1", "product_id", "duplicate product_id '1'", id="duplicate-id"),
    pytest.param("name", None, "name", "missing name", id="null-name"),
    pytest.param("name", "", "name", "missing name", id="empty-name"),
    pytest.param("category_path", None, "category_path", "empty", id="null-path"),
    pytest.param("category_path", "a >  > b", "category_path", "empty level", id="empty-level"),
    pytest.param("popularity", -1.5, "popularity", "finite number >= 0", id="negative-popularity"),
    pytest.param("popularity", math.inf, "popularity", "finite number >= 0", id="inf-popularity"),
]


@pytest.mark.parametrize(("column", "value", "named", "reason"), PARQUET_BAD)
def test_bad_parquet_row_names_file_row_and_column(
    tmp_path: Path, column: str, value: Any, named: str, reason: str
) -> None:
    columns = parquet_columns()
    columns[column][1] = value
    path = write_parquet(tmp_path / "catalog.parquet", columns)
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 2, named)
    assert re.search(reason, caught.value.reason)
    result = read_catalog(path, skip_invalid=True)
    assert [p.product_id for p in result.products] == [columns["product_id"][0], columns["product_id"][2]]
    assert [(s.row, s.column) for s in result.skipped] == [(2, named)]
    assert result.rows_read == 3


def test_parquet_unreadable_popularity_string(tmp_path: Path) -> None:
    columns: dict[str, Any] = {**parquet_columns(), "popularity": ["1", "abc", "2.5"]}
    path = write_parquet(tmp_path / "catalog.parquet", columns)
    with pytest.raises(InputError, match="unreadable number 'abc'") as caught:
        read_catalog(path)
    assert_names(caught.value, path, 2, "popularity")


def test_parquet_rows_are_numbered_across_batches(tmp_path: Path) -> None:
    columns = parquet_columns(20_000)
    columns["name"][17_000] = ""
    path = write_parquet(tmp_path / "catalog.parquet", columns)
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, 17_001, "name")


def test_parquet_missing_required_column_lists_the_header(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "catalog.parquet", {"product_id": ["1"], "name": ["Milk"]})
    with pytest.raises(InputError) as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)
    assert "missing column(s) brand, category_path" in caught.value.reason
    assert "the header has product_id, name" in caught.value.reason


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "catalog.parquet"
    path.write_bytes(b"product_id,name\n1,Milk\n")
    with pytest.raises(InputError, match="not a readable Parquet file") as caught:
        read_catalog(path)
    assert_names(caught.value, path, None, None)


def test_parquet_without_rows(tmp_path: Path) -> None:
    empty = pa.array([], pa.string())
    path = write_parquet(tmp_path / "catalog.parquet", dict.fromkeys(REQUIRED_COLUMNS, empty))
    with pytest.raises(InputError, match="no rows"):
        read_catalog(path)


def test_parquet_good_rows_typed_columns(tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "catalog.parquet",
        {
            "product_id": pa.array([101, 102], pa.int64()),  # numeric ids become strings
            "name": [" Greek Yogurt ", "Oat Milk"],
            "brand": [None, "Oatly"],  # null brand: no brand
            "category_path": ["dairy eggs > yogurt", "dairy eggs > milk alternatives"],
            "attributes": ["plain; nonfat", None],
            "popularity": pa.array([7, None], pa.int64()),
        },
    )
    result = read_catalog(path)
    assert result.products == [
        Product("101", "Greek Yogurt", "", ("dairy eggs", "yogurt"), ("plain", "nonfat"), 7.0),
        Product("102", "Oat Milk", "Oatly", ("dairy eggs", "milk alternatives"), (), 0.0),
    ]


def test_parquet_list_attributes(tmp_path: Path) -> None:
    columns: dict[str, Any] = {
        **parquet_columns(1),
        "attributes": pa.array([["plain", "nonfat"]], pa.list_(pa.string())),
    }
    path = write_parquet(tmp_path / "catalog.parquet", columns)
    assert read_catalog(path).products[0].attributes == ("plain", "nonfat")
