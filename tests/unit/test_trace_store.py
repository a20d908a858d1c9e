"""The trace store's files and `qu trace`'s reading of them, on spans made here (the store's receiver runs on the
real stack in tests/e2e/test_telemetry.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from services.telemetry.span_store import CURRENT, PREVIOUS, SpanFiles, StoredSpan, from_otlp, read_spans
from services.telemetry.waterfall import TraceNotFound, event_trace, key_attributes, slowest

MS = 1_000_000


def span(
    trace: str, span_id: str, parent: str, name: str, start_ms: float, end_ms: float, **attrs: object
) -> StoredSpan:
    links = attrs.pop("links", [])
    return StoredSpan(
        trace.ljust(32, "0"),
        span_id.ljust(16, "0"),
        parent.ljust(16, "0") if parent else "",
        name,
        "INTERNAL",
        int(start_ms * MS),
        int(end_ms * MS),
        dict(attrs),
        links=[(t.ljust(32, "0"), s.ljust(16, "0")) for t, s in links],  # type: ignore[attr-defined]
    )


def two_events() -> list[StoredSpan]:
    """Events a and b in one batch: a's lookup span is the real call (Redis under it), b's is its linked twin."""
    return [
        span("a", "a1", "", "process qu.search-events.v1", 0, 10, **{"qu.event_id": "a", "service.name": "qu-worker"}),
        span("a", "a2", "a1", "head-tag lookup", 1, 3, **{"qu.hits": 1, "service.name": "qu-worker"}),
        span("a", "a3", "a2", "MGET", 1.5, 2.5, **{"service.name": "qu-worker"}),
        span("b", "b1", "", "process qu.search-events.v1", 0, 30, **{"qu.event_id": "b", "qu.source": "student"}),
        span("b", "b2", "b1", "head-tag lookup", 1, 3, links=[("a", "a2")]),
        span("b", "b3", "b1", "student", 4, 25),
        span("b", "b4", "b3", "inference.GRPCInferenceService/ModelInfer", 5, 24),
        span("b", "b5", "b4", "compute", 6, 20),  # Triton's: no service.name of its own
    ]


def test_an_events_waterfall_follows_the_link_to_the_shared_call() -> None:
    rows = event_trace(two_events(), "b")
    names = [("  " * r.depth) + r.span.name + (" (linked)" if r.linked else "") for r in rows]
    assert names == [
        "process qu.search-events.v1",
        "  head-tag lookup",
        "    MGET (linked)",  # event a's Redis call, which served b too
        "  student",
        "    inference.GRPCInferenceService/ModelInfer",
        "      compute",
    ]
    assert [r.offset_ms for r in rows] == [0, 1, 1.5, 4, 5, 6]
    assert rows[2].service == "qu-worker"
    assert "source=student" in key_attributes(rows[0].span)


def test_a_missing_event_says_why_it_may_be_missing() -> None:
    with pytest.raises(TraceNotFound, match="QU_TRACE_SAMPLE_RATIO"):
        event_trace(two_events(), "nope")


def test_the_slowest_traces_come_first() -> None:
    summaries = slowest(two_events(), 5)
    assert [(s.event_id, s.duration_ms, s.spans) for s in summaries] == [("b", 30.0, 5), ("a", 10.0, 3)]


def test_files_rotate_at_their_size_and_read_back_oldest_first(tmp_path: Path) -> None:
    files = SpanFiles(tmp_path, max_bytes=2048)
    written = [span("c", f"{i:x}", "", f"s{i}", i, i + 1, pad="x" * 200) for i in range(30)]
    for s in written:
        files.append(s)
    files.close()
    assert (tmp_path / PREVIOUS).stat().st_size <= 2048 and (tmp_path / CURRENT).exists()
    kept = list(read_spans(tmp_path))
    assert [s.name for s in kept] == [s.name for s in written[-len(kept) :]]  # the latest, in order
    assert 5 < len(kept) < 30
    with (tmp_path / CURRENT).open("ab") as handle:
        handle.write(b'{"trace_id": "cut short')  # a write in progress
    assert len(list(read_spans(tmp_path))) == len(kept)


def test_an_otlp_span_is_stored_with_hex_ids_and_plain_attributes() -> None:
    message = Span(
        trace_id=bytes.fromhex("ab" * 16),
        span_id=bytes.fromhex("cd" * 8),
        name="process qu.search-events.v1",
        kind=Span.SPAN_KIND_CONSUMER,
        start_time_unix_nano=5 * MS,
        end_time_unix_nano=7 * MS,
        attributes=[
            KeyValue(key="qu.event_id", value=AnyValue(string_value="e1")),
            KeyValue(key="messaging.kafka.offset", value=AnyValue(int_value=42)),
            KeyValue(key="qu.degraded", value=AnyValue(bool_value=True)),
        ],
        links=[Span.Link(trace_id=bytes.fromhex("01" * 16), span_id=bytes.fromhex("02" * 8))],
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
    )
    stored = from_otlp(message)
    assert (stored.trace_id, stored.span_id, stored.parent_span_id) == ("ab" * 16, "cd" * 8, "")
    assert stored.kind == "CONSUMER" and stored.duration_ms == 2.0
    assert stored.attributes == {"qu.event_id": "e1", "messaging.kafka.offset": 42, "qu.degraded": True}
    assert stored.links == [("01" * 16, "02" * 8)] and stored.status == "ERROR"
    assert StoredSpan.from_json(stored.to_json()) == stored


def test_a_request_shared_by_two_events_shows_under_both() -> None:
    spans = two_events()
    spans.append(span("c", "c1", "", "process qu.search-events.v1", 0, 28, **{"qu.event_id": "c"}))
    spans.append(span("c", "c3", "c1", "student", 4, 26))
    # b's student request carried c's query too: a link to c's student span.
    grpc = next(s for s in spans if s.span_id.startswith("b4"))
    grpc.kind = "CLIENT"
    grpc.links.append(("c".ljust(32, "0"), "c3".ljust(16, "0")))
    names = [("  " * r.depth) + r.span.name + (" (linked)" if r.linked else "") for r in event_trace(spans, "c")]
    assert names == [
        "process qu.search-events.v1",
        "  student",
        "    inference.GRPCInferenceService/ModelInfer (linked)",
        "      compute (linked)",
    ]
    # Event a's waterfall does not show b's twin of a's lookup.
    assert [r.span.name for r in event_trace(spans, "a")] == ["process qu.search-events.v1", "head-tag lookup", "MGET"]
