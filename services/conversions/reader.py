"""Read and validate a conversion log (JSON lines or Parquet), one record at a time.

A record has the fields ``query, session_id, user_id, product_id, ts``; other fields are
ignored. ``ts`` is either an ISO-8601 string that carries a timezone
(``"2024-05-01T12:00:00Z"``, ``"2024-05-01T14:00:00+02:00"``) or a number of seconds or
milliseconds since the Unix epoch: a number of at least 1e11 is read as milliseconds (1e11
seconds is the year 5138, 1e11 milliseconds is 1973). In Parquet, a ``timestamp`` column
with a timezone is accepted too. A time outside 2000-01-01 .. 2100-01-01 (UTC) is refused:
in practice it is a zeroed clock or a unit mix-up, and since scores decay back from the
newest time in the log, one such record would skew every score.

Every record is checked. A bad one stops the read with an :class:`InputError` naming the
file, the record's number (the line number in JSON lines, counted from 1 with blank lines
counted; the row number in Parquet, from 1) and the field, unless the caller asked to skip
bad records; then each skipped record is kept in :attr:`ConversionReadStats.skipped` with
its reason, so nothing is dropped unreported. The log is streamed, never held in memory.
"""

from __future__ import annotations

import gzip
import math
from collections import Counter
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from services.errors import InputError
from services.normalize import normalize_query

__all__ = ["REQUIRED_FIELDS", "Conversion", "ConversionLogReader", "ConversionReadStats", "SkippedRecord"]

REQUIRED_FIELDS = ("query", "session_id", "user_id", "product_id", "ts")

_MS_THRESHOLD = 1e11
_TS_MIN = 946_684_800.0  # 2000-01-01T00:00:00Z
_TS_MAX = 4_102_444_800.0  # 2100-01-01T00:00:00Z
_PARQUET_BATCH = 65_536
_BOM = b"\xef\xbb\xbf"

# A record's values in the order of REQUIRED_FIELDS, None where absent: no per-row dict to build.
_Record = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Conversion:
    """One valid record. ``query`` is the normalized key; ``ts`` is seconds since the epoch (UTC)."""

    query: str
    session_id: str
    user_id: str
    product_id: str
    ts: float


@dataclass(frozen=True, slots=True)
class SkippedRecord:
    row: int
    field: str  # "" when the record as a whole is unreadable (invalid JSON, not an object)
    reason: str


@dataclass(slots=True)
class ConversionReadStats:
    source: str
    records_read: int = 0
    kept: int = 0
    skipped: list[SkippedRecord] = field(default_factory=list)

    def skipped_by_reason(self) -> dict[str, int]:
        """Counts of skipped records by field and kind of problem, for the build report."""
        return dict(Counter(f"{s.field or 'record'}: {s.reason.split(':')[0]}" for s in self.skipped))


class ConversionLogReader:
    """Iterate over the valid records of a ``.jsonl``, ``.jsonl.gz`` or ``.parquet`` log.

    ``product_ids`` is the catalog (any container of ids, e.g. a dict keyed by id): a record
    naming another product is invalid. :attr:`stats` is complete once iteration has ended.
    A reader is iterated once.
    """

    def __init__(self, path: Path, product_ids: Container[str], *, skip_invalid: bool = False) -> None:
        self.path = path
        self.stats = ConversionReadStats(str(path))
        self._product_ids = product_ids
        self._skip_invalid = skip_invalid
        self._started = False
        # Logs repeat their head queries many times; normalizing each distinct text once is
        # most of the difference between seconds and a minute on a million lines.
        self._keys: dict[str, str] = {}

    def __iter__(self) -> Iterator[Conversion]:
        if self._started:
            raise RuntimeError("a ConversionLogReader can be iterated only once")
        self._started = True
        source = self.stats.source
        if not self.path.is_file():
            raise InputError(source, "no such file")
        stats = self.stats
        for row, raw in _iter_records(self.path):
            stats.records_read += 1
            try:
                conversion = self._parse(row, raw)
            except InputError as err:
                if not self._skip_invalid:
                    raise
                stats.skipped.append(SkippedRecord(row, err.column or "", err.reason))
                continue
            stats.kept += 1
            yield conversion
        if stats.records_read == 0:
            raise InputError(source, "the conversion log has no records")

    def _parse(self, row: int, raw: _Record | InputError) -> Conversion:
        if isinstance(raw, InputError):
            raise raw
        source = self.stats.source
        text, session_value, user_value, product_value, ts = raw
        if text is None:
            raise InputError(source, "missing query", row=row, column="query")
        if not isinstance(text, str):
            raise InputError(source, f"expected text, got {type(text).__name__}", row=row, column="query")
        key = self._keys.get(text)
        if key is None:
            key = self._keys[text] = normalize_query(text)
        if not key:
            raise InputError(
                source, f"empty query: {text!r} has nothing left after normalization", row=row, column="query"
            )
        session_id = _ident(source, row, session_value, "session_id")
        user_id = _ident(source, row, user_value, "user_id")
        product_id = _ident(source, row, product_value, "product_id")
        if product_id not in self._product_ids:
            raise InputError(
                source,
                f"unknown product_id: {product_id!r} is not in the catalog",
                row=row,
                column="product_id",
            )
        return Conversion(key, session_id, user_id, product_id, _timestamp(source, row, ts))


def _ident(source: str, row: int, value: Any, name: str) -> str:
    """An id is text or an integer (exports often write numeric ids as numbers); never a float."""
    if value is None:
        raise InputError(source, f"missing {name}", row=row, column=name)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InputError(source, f"empty {name}", row=row, column=name)
        return text
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InputError(source, f"expected text or an integer, got {type(value).__name__}", row=row, column=name)


def _timestamp(source: str, row: int, value: Any) -> float:
    """Seconds since the epoch for a ``ts`` value: see the module docstring for what is accepted."""
    if value is None:
        raise InputError(source, "missing ts", row=row, column="ts")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise InputError(source, "empty ts", row=row, column="ts")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError as err:
            raise InputError(
                source,
                f"unreadable timestamp: {value!r} is neither ISO-8601 with a timezone nor "
                "epoch seconds/milliseconds as a number",
                row=row,
                column="ts",
            ) from err
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            # A local time of unknown zone could be off by up to a day; guessing UTC would hide that.
            raise InputError(
                source,
                f"timestamp without a timezone: {value!r} (add 'Z' or an offset)",
                row=row,
                column="ts",
            )
        seconds = parsed.timestamp()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise InputError(source, f"unreadable timestamp: {value!r}", row=row, column="ts")
        if abs(seconds) >= _MS_THRESHOLD:
            seconds /= 1000.0
    else:
        raise InputError(
            source,
            f"unreadable timestamp: expected text or a number, got {type(value).__name__}",
            row=row,
            column="ts",
        )
    if not _TS_MIN <= seconds < _TS_MAX:
        raise InputError(
            source,
            f"timestamp out of range: {value!r} is outside 2000-01-01 .. 2100-01-01 UTC",
            row=row,
            column="ts",
        )
    return seconds


def _iter_records(path: Path) -> Iterator[tuple[int, _Record | InputError]]:
    """(record number, record) pairs; a record that cannot be decoded comes as an InputError so
    the caller can skip it, while a file that cannot be read any further raises at once."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _iter_parquet(path)
    elif name.endswith((".jsonl", ".jsonl.gz")):
        yield from _iter_jsonl(path)
    else:
        raise InputError(str(path), "unknown log format: expected a .jsonl, .jsonl.gz or .parquet file")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, _Record | InputError]]:
    source = str(path)
    gzipped = path.name.lower().endswith(".gz")
    line_number = 0
    try:
        with gzip.open(path, "rb") if gzipped else path.open("rb") as handle:
            for line_number, line in enumerate(handle, start=1):
                if line_number == 1 and line.startswith(_BOM):
                    line = line[len(_BOM) :]
                if not line.strip():
                    continue  # a blank line holds no record, so nothing is dropped
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    yield line_number, InputError(source, f"invalid JSON: {err}", row=line_number)
                    continue
                if not isinstance(value, dict):
                    yield (
                        line_number,
                        InputError(source, f"expected a JSON object, got {type(value).__name__}", row=line_number),
                    )
                    continue
                yield (
                    line_number,
                    (
                        value.get("query"),
                        value.get("session_id"),
                        value.get("user_id"),
                        value.get("product_id"),
                        value.get("ts"),
                    ),
                )
    except (OSError, EOFError) as err:  # a corrupt or truncated gzip stream: nothing after it can be read
        raise InputError(source, f"unreadable file after line {line_number} ({err})") from err


def _iter_parquet(path: Path) -> Iterator[tuple[int, _Record | InputError]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = str(path)
    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise InputError(source, f"not a readable Parquet file ({err})") from err
    schema = parquet.schema_arrow
    missing = [f for f in REQUIRED_FIELDS if f not in schema.names]
    if missing:
        raise InputError(
            source,
            f"missing column(s) {', '.join(missing)}; the file has "
            f"{', '.join(schema.names) or 'nothing'} (required: {', '.join(REQUIRED_FIELDS)})",
        )
    ts_type = schema.field("ts").type
    ts_is_timestamp = pa.types.is_timestamp(ts_type)
    if ts_is_timestamp and ts_type.tz is None:
        raise InputError(
            source,
            "the ts column is a timestamp without a timezone; store it with one (e.g. timestamp[us, tz=UTC])",
            column="ts",
        )
    row = 0
    batches = parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=list(REQUIRED_FIELDS))
    while True:
        try:
            batch = next(batches, None)
        except Exception as err:  # a corrupt page: nothing after it can be read
            raise InputError(source, f"unreadable file after row {row} ({err})") from err
        if batch is None:
            return
        columns = [_column_values(batch.column(name)) for name in REQUIRED_FIELDS[:-1]]
        ts = batch.column("ts")
        if ts_is_timestamp:
            # As epoch seconds: Python datetimes cannot hold a nanosecond column.
            micros = _column_values(ts.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64()))
            columns.append([None if m is None else m / 1e6 for m in micros])
        else:
            columns.append(_column_values(ts))
        for values in zip(*columns, strict=True):
            row += 1
            yield row, values


def _column_values(column: Any) -> list[Any]:
    """A pyarrow array as Python values, None for null.

    Through numpy is about ten times faster than ``to_pylist()`` for text and numbers, but numpy
    turns an integer column with nulls into floats, so those and every other type take the slow,
    exact path.
    """
    import pyarrow as pa

    kind = column.type
    if (pa.types.is_string(kind) or pa.types.is_large_string(kind)) or (
        column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind))
    ):
        return list(column.to_numpy(zero_copy_only=False).tolist())
    return list(column.to_pylist())
