"""Read and validate a catalog file (CSV or Parquet) into products.

Every row is checked. A bad row stops the import with an :class:`InputError` naming the
file, the row and the column, unless the caller asked to skip bad rows; then each
skipped row is kept in the result with its reason, so nothing is dropped unreported.
"""

from __future__ import annotations

import csv
import gzip
import io
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
    problem: str  # the reason without the offending value, for counting


@dataclass(slots=True)
class CatalogReadResult:
    source: str
    products: list[Product]
    rows_read: int
    skipped: list[SkippedRow] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        """Counts of skipped rows by column and kind of problem, for the import report."""
        return dict(Counter(f"{s.column}: {s.problem}" if s.column else s.problem for s in self.skipped))


# A row the file layer could not turn into cells (too many cells): reported like any bad row.
RawRow = dict[str, Any] | InputError


def read_catalog(path: Path, *, skip_invalid: bool = False) -> CatalogReadResult:
    """Read ``path`` (``.csv``, ``.csv.gz`` or ``.parquet``) into validated products.

    Rows are numbered from 1, the header not counted, in CSV and Parquet alike.
    """
    source = str(path)
    if not path.is_file():
        raise InputError(source, "no such file")
    products: list[Product] = []
    skipped: list[SkippedRow] = []
    seen: set[str] = set()
    count = 0
    for count, raw in enumerate(_iter_rows(path), start=1):
        try:
            if isinstance(raw, InputError):
                raise raw
            product = _parse_row(source, count, raw)
            if product.product_id in seen:
                raise InputError(
                    source,
                    f"duplicate product_id {product.product_id!r}",
                    row=count,
                    column="product_id",
                    problem="duplicate product_id",
                )
        except InputError as err:
            if not skip_invalid:
                raise
            skipped.append(SkippedRow(count, err.column or "", err.reason, err.problem))
            continue
        seen.add(product.product_id)
        products.append(product)
    if count == 0:
        raise InputError(source, "the catalog has no rows")
    return CatalogReadResult(source, products, count, skipped)


def _iter_rows(path: Path) -> Iterator[RawRow]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif name.endswith((".csv", ".csv.gz")):
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


def _decode(source: str, data: bytes) -> str:
    """The file as text; invalid UTF-8 is reported at its line, before any row is parsed."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        if line == 1:
            raise InputError(source, f"the header is not valid UTF-8 ({err.reason} at byte {err.start})") from err
        # Line 1 is the header, so line N holds row N-1 (unless a quoted cell spans lines).
        raise InputError(
            source, f"invalid UTF-8 ({err.reason}) at line {line}, byte {err.start}", row=line - 1
        ) from err


def _iter_csv(path: Path) -> Iterator[RawRow]:
    source = str(path)
    try:
        data = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError) as err:
        raise InputError(source, f"cannot read the file ({err})") from err
    reader = csv.DictReader(io.StringIO(_decode(source, data), newline=""))
    header = [c.strip() for c in reader.fieldnames or []]
    _check_columns(source, header)
    reader.fieldnames = header
    row_number = 0
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            # The csv module cannot resynchronise after this: stop, naming the row.
            raise InputError(source, f"malformed CSV: {err}", row=row_number + 1) from err
        row_number += 1
        if None in raw:  # more cells than header columns
            yield InputError(
                source,
                f"row has {len(header) + len(raw[None])} cells, the header {len(header)}",
                row=row_number,
                problem="too many cells",
            )
        else:
            yield raw


def _iter_parquet(path: Path) -> Iterator[RawRow]:
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
    # A float NaN is how Parquet writers (pandas) store a missing cell: empty, like a blank CSV cell.
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
        problem = "the category path has an empty level" if "empty level" in str(err) else ""
        raise InputError(source, str(err), row=row, column="category_path", problem=problem) from err
    declared = raw.get("attributes")
    # A list column (Parquet list<string>, as the engine's own products.parquet) or ";"-joined text.
    items = [_text(a) for a in declared] if isinstance(declared, list | tuple) else _text(declared).split(";")
    attributes = tuple(a.strip() for a in items if a.strip())
    popularity_text = _text(raw.get("popularity"))
    popularity = 0.0
    if popularity_text:
        try:
            popularity = float(popularity_text)
        except ValueError as err:
            raise InputError(
                source,
                f"unreadable number {popularity_text!r}",
                row=row,
                column="popularity",
                problem="unreadable number",
            ) from err
        if not math.isfinite(popularity) or popularity < 0:
            raise InputError(
                source,
                f"popularity must be a finite number >= 0, got {popularity_text!r}",
                row=row,
                column="popularity",
                problem="negative or non-finite number",
            )
    return Product(product_id, name, _text(raw.get("brand")), path, attributes, popularity)
