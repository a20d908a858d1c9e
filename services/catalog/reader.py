"""Read and validate a catalog file (CSV or Parquet) into products.

Every row is checked. A bad row stops the import with an :class:`InputError` naming the
file, the row and the column, unless the caller asked to skip bad rows; then each
skipped row is kept in the result with its reason, so nothing is dropped unreported.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.catalog.model import Product, parse_path
from services.errors import InputError

REQUIRED_COLUMNS = ("product_id", "name", "brand", "category_path")
OPTIONAL_COLUMNS = ("attributes", "popularity")


@dataclass(frozen=True, slots=True)
class SkippedRow:
    row: int
    column: str
    reason: str


@dataclass(slots=True)
class CatalogReadResult:
    source: str
    products: list[Product]
    rows_read: int
    skipped: list[SkippedRow] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        """Counts of skipped rows by column and kind of problem, for the import report."""
        return dict(Counter(f"{s.column}: {s.reason.split(':')[0]}" for s in self.skipped))


def read_catalog(path: Path, *, skip_invalid: bool = False) -> CatalogReadResult:
    """Read ``path`` (``.csv``, ``.csv.gz`` or ``.parquet``) into validated products.

    Rows are numbered from 1, the header not counted, in CSV and Parquet alike.
    """
    source = str(path)
    if not path.is_file():
        raise InputError(source, "no such file")
    rows = _iter_rows(path)
    products: list[Product] = []
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    count = 0
    for count, raw in enumerate(rows, start=1):
        try:
            product = _parse_row(source, count, raw)
            if product.product_id in seen:
                raise InputError(source, f"duplicate product_id {product.product_id!r}", row=count, column="product_id")
        except InputError as err:
            if not skip_invalid:
                raise
            skipped.append(SkippedRow(count, err.column or "", err.reason))
            continue
        seen.add(product.product_id)
        products.append(product)
    if count == 0:
        raise InputError(source, "the catalog has no rows")
    return CatalogReadResult(source, products, count, skipped)


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    suffixes = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".parquet":
        yield from _iter_parquet(path)
    elif path.suffix.lower() == ".csv" or suffixes == ".csv.gz":
        yield from _iter_csv(path)
    else:
        raise InputError(str(path), "unknown catalog format: expected a .csv, .csv.gz or .parquet file")


def _check_columns(source: str, columns: list[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            source,
            f"missing column(s) {', '.join(missing)}; the header has {', '.join(columns) or 'nothing'} "
            f"(required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})",
        )


def _iter_csv(path: Path) -> Iterator[dict[str, Any]]:
    import gzip

    source = str(path)
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            header = [c.strip() for c in reader.fieldnames or []]
        except UnicodeDecodeError as err:
            raise InputError(source, f"the header is not valid UTF-8 ({err.reason})") from err
        _check_columns(source, header)
        reader.fieldnames = header
        row_number = 0
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as err:
                raise InputError(source, f"invalid UTF-8 ({err.reason}) after row {row_number}") from err
            except csv.Error as err:
                raise InputError(source, f"malformed CSV: {err}", row=row_number + 1) from err
            row_number += 1
            if None in raw:  # more cells than header columns
                raise InputError(
                    source,
                    f"row has {len(header) + len(raw[None])} cells, the header {len(header)}",
                    row=row_number,
                )
            yield raw


def _iter_parquet(path: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputError(source, f"not a readable Parquet file ({err})") from err
    _check_columns(source, list(parquet.schema_arrow.names))
    for batch in parquet.iter_batches(batch_size=8192):
        yield from batch.to_pylist()


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def _parse_row(source: str, row: int, raw: dict[str, Any]) -> Product:
    product_id = _text(raw.get("product_id"))
    if not product_id:
        raise InputError(source, "missing product_id", row=row, column="product_id")
    name = _text(raw.get("name"))
    if not name:
        raise InputError(source, "missing name", row=row, column="name")
    try:
        path = parse_path(_text(raw.get("category_path")))
    except ValueError as err:
        raise InputError(source, str(err), row=row, column="category_path") from err
    attributes = tuple(a.strip() for a in _text(raw.get("attributes")).split(";") if a.strip())
    popularity_text = _text(raw.get("popularity"))
    popularity = 0.0
    if popularity_text:
        try:
            popularity = float(popularity_text)
        except ValueError as err:
            raise InputError(source, f"unreadable number {popularity_text!r}", row=row, column="popularity") from err
        if not math.isfinite(popularity) or popularity < 0:
            raise InputError(
                source,
                f"popularity must be a finite number >= 0, got {popularity_text!r}",
                row=row,
                column="popularity",
            )
    return Product(product_id, name, _text(raw.get("brand")), path, attributes, popularity)
