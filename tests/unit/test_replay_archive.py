"""The traffic archive: hour layout, whole files only, and reads without the duplicates at-least-once writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.replay.archive import (
    ArchivedRecord,
    ArchiveError,
    archive_files,
    read_archive,
    records_of,
    write_batch,
)
from services.replay.recorder import event_id_of
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS

NINE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def record(offset: int, at: datetime, event_id: str | None = None, *, partition: int = 0) -> ArchivedRecord:
    value = f'{{"event_id": "{event_id}", "query": "milk"}}'.encode() if event_id else b"\xff not json"
    ms = int(at.timestamp() * 1000)
    return ArchivedRecord(SEARCH_EVENTS, partition, offset, ms, b"milk", value, (("traceparent", b"00-x"),), event_id)


def test_records_land_in_one_file_per_topic_hour_and_partition(tmp_path: Path) -> None:
    batch = [
        record(10, NINE + timedelta(minutes=59), "a"),
        record(11, NINE + timedelta(minutes=61), "b"),
        record(3, NINE, "c", partition=2),
    ]
    written = write_batch(tmp_path, batch)
    names = sorted(str(p.relative_to(tmp_path)) for p in written)
    assert names == [
        f"topic={SEARCH_EVENTS}/hour=2026-12-06T09/p0-o10-10.parquet",
        f"topic={SEARCH_EVENTS}/hour=2026-12-06T09/p2-o3-3.parquet",
        f"topic={SEARCH_EVENTS}/hour=2026-12-06T10/p0-o11-11.parquet",
    ]
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left beside them


def test_a_read_gives_each_record_once_with_its_bytes_and_headers(tmp_path: Path) -> None:
    first = [record(i, NINE + timedelta(seconds=i), f"e{i}") for i in range(5)]
    write_batch(tmp_path, first)
    # After a crash between the write and the commit, the recorder writes offsets 3-4 again with 5-6.
    write_batch(tmp_path, [record(i, NINE + timedelta(seconds=i), f"e{i}") for i in range(3, 7)])
    # A producer's retried send: the same event at a new offset.
    write_batch(tmp_path, [record(7, NINE + timedelta(seconds=8), "e6")])
    rows = list(records_of(read_archive(tmp_path, SEARCH_EVENTS)))
    assert [(r.offset, r.event_id) for r in rows] == [(i, f"e{i}") for i in range(7)]
    assert rows[0].headers == (("traceparent", b"00-x"),) and rows[0].key == b"milk"


def test_a_window_keeps_the_records_timestamped_inside_it(tmp_path: Path) -> None:
    write_batch(tmp_path, [record(i, NINE + timedelta(minutes=20 * i), f"e{i}") for i in range(7)])
    since, until = NINE + timedelta(minutes=40), NINE + timedelta(minutes=100)
    rows = list(records_of(read_archive(tmp_path, SEARCH_EVENTS, since=since, until=until)))
    assert [r.event_id for r in rows] == ["e2", "e3", "e4"]
    # Whole hours are skipped without being opened: 09 (0, 20, 40 min), 10 (60, 80, 100), 11 (120).
    assert len(archive_files(tmp_path, SEARCH_EVENTS, since=NINE + timedelta(hours=1))) == 2
    assert len(archive_files(tmp_path, SEARCH_EVENTS, until=NINE + timedelta(minutes=30))) == 1


def test_records_that_are_not_the_engines_messages_are_kept_without_an_event_id(tmp_path: Path) -> None:
    write_batch(tmp_path, [record(0, NINE), record(1, NINE)])
    assert [r.value for r in records_of(read_archive(tmp_path, SEARCH_EVENTS))] == [b"\xff not json"] * 2


def test_an_empty_or_missing_archive_reads_as_no_records(tmp_path: Path) -> None:
    assert read_archive(tmp_path / "nowhere", QUERY_ANNOTATIONS).num_rows == 0


def test_a_damaged_file_is_named_in_the_error(tmp_path: Path) -> None:
    (path,) = write_batch(tmp_path, [record(0, NINE, "a")])
    path.write_bytes(b"not parquet")
    with pytest.raises(ArchiveError, match=str(path)):
        read_archive(tmp_path, SEARCH_EVENTS)


def test_a_window_without_a_time_zone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="no time zone"):
        read_archive(tmp_path, SEARCH_EVENTS, since=datetime(2026, 12, 6, 9))


def test_the_event_id_is_read_from_json_and_protobuf_values() -> None:
    from services.domain import SearchRequest
    from services.wire import encode_search_event

    proto = encode_search_event(SearchRequest(event_id="p1", query="milk"))
    assert event_id_of(SEARCH_EVENTS, proto, [("content-type", b"application/x-protobuf")]) == "p1"
    assert event_id_of(QUERY_ANNOTATIONS, b'{"event_id": "j1"}', None) == "j1"
    assert event_id_of(SEARCH_EVENTS, b"\xff", None) is None
    assert event_id_of(SEARCH_EVENTS, None, None) is None


def test_offset_ranges_are_read_and_a_bad_one_is_named() -> None:
    from services.replay.runner import parse_offsets

    assert parse_offsets("0:1200-1455, 3:7-7") == {0: (1200, 1455), 3: (7, 7)}
    for bad, reason in [("0:9-2", "after the last"), ("x:1-2", "PARTITION:FIRST-LAST"), ("1:1-2,1:3-4", "twice")]:
        with pytest.raises(ValueError, match=reason):
            parse_offsets(bad)


def test_a_window_by_offsets_keeps_those_partitions_ranges(tmp_path: Path) -> None:
    from services.replay.runner import window

    write_batch(tmp_path, [record(i, NINE, f"e{i}", partition=i % 2) for i in range(10)])
    kept = window(tmp_path, None, None, offsets={0: (2, 6), 1: (9, 9)})
    assert [(r.partition, r.offset) for r in kept] == [(0, 2), (0, 4), (0, 6), (1, 9)]
