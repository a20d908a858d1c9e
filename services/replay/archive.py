"""The traffic archive: Kafka records kept as Parquet, one directory per topic and hour.

A real cluster keeps a topic only for its retention and the embedded broker only in memory, so traffic
worth replaying (search events, and the annotations served for them) is archived by the recorder
(services/replay/recorder.py). Layout under the archive's root::

    topic=qu.search-events.v1/hour=2026-12-06T09/p0-o1200-1455.parquet

one file per (topic, hour of the record's Kafka timestamp, partition, batch), named by the partition and
the first and last offsets it holds. Each row is one record as the broker gave it: topic, partition,
offset, timestamp, key, value, headers, plus the ``event_id`` read from the value when the value is one
of the engine's messages (None otherwise: a bad record is archived too, and a replay reports it).

At least once, without duplicates: a file is written under a temporary name and renamed into place
only once it is complete (a reader never sees half a file), and the recorder commits offsets only after
that. A crash between the rename and the commit writes the same records again in a later file; so a
reader keeps the first row of each ``(topic, partition, offset)``, and of each ``(topic, event_id)``
(a producer's retried send is a second offset for one event).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.errors import QuError

HOUR_FORMAT = "%Y-%m-%dT%H"
_FILE = re.compile(r"^p(\d+)-o(\d+)-(\d+)\.parquet$")

SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp_ms", pa.int64(), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        # Keys as their bytes: a key that is not UTF-8 reaches the engine as lone surrogates (surrogateescape,
        # services/kafka_tolerant_records.py) and is kept exactly, so a replay sees what the worker saw.
        pa.field("headers", pa.list_(pa.struct([("key", pa.binary()), ("value", pa.binary())]))),
        pa.field("event_id", pa.string()),
    ]
)


class ArchiveError(QuError):
    """An archive that cannot be written or read; the message names the path."""


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    event_id: str | None

    @property
    def hour(self) -> str:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).strftime(HOUR_FORMAT)


def hour_dir(root: Path, topic: str, hour: str) -> Path:
    return root / f"topic={topic}" / f"hour={hour}"


def write_batch(root: Path, records: Sequence[ArchivedRecord]) -> list[Path]:
    """Write ``records`` (any topics, hours and partitions) as complete files; returns the files written.

    Each file appears whole or not at all (written aside, flushed to disk, renamed into place)."""
    groups: dict[tuple[str, str, int], list[ArchivedRecord]] = {}
    for record in records:
        groups.setdefault((record.topic, record.hour, record.partition), []).append(record)
    written = []
    for (topic, hour, partition), group in sorted(groups.items()):
        group.sort(key=lambda r: r.offset)
        directory = hour_dir(root, topic, hour)
        path = directory / f"p{partition}-o{group[0].offset}-{group[-1].offset}.parquet"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            write_parquet_atomically(path, _table(group))
        except OSError as err:
            raise ArchiveError(f"cannot write {len(group)} records of {topic}[{partition}] to {path}: {err}") from err
        written.append(path)
    return written


def _table(records: Sequence[ArchivedRecord]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "topic": r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp_ms": r.timestamp_ms,
                "key": r.key,
                "value": r.value,
                "headers": [{"key": k.encode("utf-8", "surrogateescape"), "value": v} for k, v in r.headers],
                "event_id": r.event_id,
            }
            for r in records
        ],
        schema=SCHEMA,
    )


def write_parquet_atomically(path: Path, table: pa.Table) -> None:
    """``table`` at ``path``, whole or not at all: written aside, flushed to disk, renamed into place."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as sink:
            pq.write_table(table, sink, compression="zstd")
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def archive_files(
    root: Path, topic: str, *, since: datetime | None = None, until: datetime | None = None
) -> list[Path]:
    """The complete files of ``topic`` whose hour overlaps [since, until), oldest hour first."""
    base = root / f"topic={topic}"
    if not base.is_dir():
        return []
    low = since.astimezone(UTC).strftime(HOUR_FORMAT) if since else None
    high = until.astimezone(UTC).strftime(HOUR_FORMAT) if until else None
    files = []
    for directory in sorted(base.glob("hour=*")):
        hour = directory.name.removeprefix("hour=")
        if (low is not None and hour < low) or (high is not None and hour > high):
            continue
        files += sorted(p for p in directory.iterdir() if _FILE.match(p.name))
    return files


def read_archive(root: Path, topic: str, *, since: datetime | None = None, until: datetime | None = None) -> pa.Table:
    """``topic``'s archived records with a timestamp in [since, until), without duplicates, in the order
    they were produced within each partition (by timestamp, then partition and offset).

    Raises :class:`ArchiveError` naming the file that cannot be read."""
    low, high = (None if m is None else _ms(m) for m in (since, until))
    tables = []
    for path in archive_files(root, topic, since=since, until=until):
        try:
            tables.append(pq.read_table(path, schema=SCHEMA))
        except (OSError, pa.ArrowInvalid) as err:
            raise ArchiveError(f"cannot read archive file {path}: {err}") from err
    if not tables:
        return SCHEMA.empty_table()
    table = pa.concat_tables(tables)
    if low is not None:
        table = table.filter(pc.greater_equal(table["timestamp_ms"], low))
    if high is not None:
        table = table.filter(pc.less(table["timestamp_ms"], high))
    table = table.sort_by([("timestamp_ms", "ascending"), ("partition", "ascending"), ("offset", "ascending")])
    return table.take(_first_of_each(table))


def _first_of_each(table: pa.Table) -> list[int]:
    """Row indexes that keep the first row of each (partition, offset) and of each event_id."""
    keep, offsets, events = [], set(), set()
    for i, (partition, offset, event_id) in enumerate(
        zip(
            table["partition"].to_pylist(),
            table["offset"].to_pylist(),
            table["event_id"].to_pylist(),
            strict=True,
        )
    ):
        if (partition, offset) in offsets or (event_id is not None and event_id in events):
            continue
        offsets.add((partition, offset))
        if event_id is not None:
            events.add(event_id)
        keep.append(i)
    return keep


def records_of(table: pa.Table) -> Iterable[ArchivedRecord]:
    for row in table.to_pylist():
        yield ArchivedRecord(
            row["topic"],
            row["partition"],
            row["offset"],
            row["timestamp_ms"],
            row["key"],
            row["value"],
            tuple((h["key"].decode("utf-8", "surrogateescape"), h["value"]) for h in row["headers"] or ()),
            row["event_id"],
        )


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ArchiveError(f"{moment.isoformat()} has no time zone: give one (for instance +00:00)")
    return int(moment.timestamp() * 1000)
