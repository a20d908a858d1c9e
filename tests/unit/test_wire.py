"""Decoding search events (JSON and protobuf) and every way one can be unusable."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import orjson
import pytest
from qu.v1 import query_annotation_pb2, search_event_pb2

from services.domain import Annotation, CacheMiss, Role, SearchRequest, Source, Tag, Understanding
from services.wire import (
    JSON,
    PROTOBUF,
    InvalidCacheMiss,
    InvalidEvent,
    decode_cache_miss,
    decode_search_event,
    encode_annotation,
    encode_cache_miss,
    encode_search_event,
)

JSON_HEADERS = [("content-type", b"application/json")]
PROTO_HEADERS = [("content-type", b"application/x-protobuf")]


def decode(value: bytes | None, headers=None):  # type: ignore[no-untyped-def]
    return decode_search_event(value, headers, max_query_chars=512)


def event(**fields: object) -> bytes:
    base: dict[str, object] = {
        "event_id": "e1",
        "query": "bread no gluten",
        "user_id": "u1",
        "session_id": "s1",
        "ts": "2026-11-01T10:00:00Z",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_json_with_or_without_a_header() -> None:
    for headers in (JSON_HEADERS, None, [("Content-Type", "application/json; charset=utf-8")]):
        request = decode(event(), headers)
        assert request.query == "bread no gluten" and request.event_id == "e1"
        assert request.timestamp == datetime(2026, 11, 1, 10, tzinfo=UTC)


def test_epoch_timestamps_in_seconds_or_milliseconds() -> None:
    assert decode(event(ts=1_700_000_000)).timestamp == decode(event(ts=1_700_000_000_000)).timestamp


def test_protobuf_round_trip() -> None:
    original = SearchRequest(
        "e9", "x large zip lock", "u", "s", datetime(2026, 1, 2, tzinfo=UTC), "en-US", {"store_id": "store-1"}
    )
    assert decode(encode_search_event(original), PROTO_HEADERS) == original


@pytest.mark.parametrize(
    ("value", "headers", "reason"),
    [
        (b"", None, "empty_record"),
        (None, None, "empty_record"),
        (b"{not json", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b"\xff\xfe{}", None, "invalid_utf8"),
        (event(query=...), None, "missing_query"),
        (event(query="   "), None, "missing_query"),
        (event(query=42), None, "invalid_field"),
        (event(query="a" * 513), None, "query_too_long"),
        (event(query="milk\x00"), None, "control_characters"),
        (event(query="milk\x1b[2J"), None, "control_characters"),
        (event(event_id=...), None, "missing_event_id"),
        (event(ts="yesterday"), None, "invalid_field"),
        (b"\x0a\x05\xff\xff", PROTO_HEADERS, "invalid_protobuf"),
        (event(), [("content-type", b"text/csv")], "unsupported_content_type"),
    ],
)
def test_unusable_events_have_a_reason(value: bytes | None, headers: object, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(value, headers)
    assert caught.value.reason == reason
    assert caught.value.detail


def test_a_query_of_exactly_the_limit_is_accepted() -> None:
    assert len(decode(event(query="a" * 512)).query) == 512


def test_the_limit_applies_to_the_query_in_compatibility_form() -> None:
    # U+FDFA is one character that NFKC (the first step of normalization) makes 18: a short query
    # would otherwise reach the cache, the student and the annotation 18 times longer than allowed.
    with pytest.raises(InvalidEvent) as caught:
        decode(event(query="\ufdfa" * 511))
    assert caught.value.reason == "query_too_long"
    assert "511 characters" in caught.value.detail and "9198" in caught.value.detail
    assert "limit is 512" in caught.value.detail
    assert decode(event(query="\ufb01" * 256)).query == "\ufb01" * 256  # "fi" ligatures: 512 in NFKC, accepted


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(2**62, 0), (-(2**62), 0), (253_402_300_800, 0), (0, -5), (0, 1_000_000_000)],
    ids=["far-future", "far-past", "year-10000", "negative-nanos", "nanos-overflow"],
)
def test_an_out_of_range_protobuf_timestamp_is_an_invalid_field(seconds: int, nanos: int) -> None:
    message = search_event_pb2.SearchEvent(event_id="e1", query="milk")
    message.timestamp.seconds, message.timestamp.nanos = seconds, nanos
    with pytest.raises(InvalidEvent) as caught:
        decode(message.SerializeToString(), PROTO_HEADERS)
    assert caught.value.reason == "invalid_field"  # the reason a bad JSON timestamp gets too
    assert f"seconds={seconds}" in caught.value.detail and f"nanos={nanos}" in caught.value.detail


def test_annotation_json_and_protobuf_say_the_same() -> None:
    annotation = Annotation(
        "e1",
        "Bread no gluten",
        "bread no gluten",
        Understanding([Tag(Role.PRODUCT, 0, 5, "Bread", "bread")], version="v"),
        Source.STUDENT,
        "lexicon-v1",
        annotated_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    as_json, content_type = encode_annotation(annotation, "json")
    assert content_type == "application/json"
    data = orjson.loads(as_json)
    assert data["tags"][0] == {
        "role": "product",
        "start": 0,
        "end": 5,
        "text": "Bread",
        "canonical": "bread",
        "confidence": 1.0,
    }
    assert data["source"] == "student" and data["annotated_at"] == "2026-01-01T00:00:00Z"
    as_proto, content_type = encode_annotation(annotation, "protobuf")
    message = query_annotation_pb2.QueryAnnotation.FromString(as_proto)
    assert content_type == "application/x-protobuf"
    assert message.event_id == "e1" and message.tags[0].canonical == "bread"
    assert message.source == query_annotation_pb2.SOURCE_STUDENT


@pytest.mark.parametrize("key", [b"\xffbad", "\udcffbad"], ids=["bytes", "surrogates"])
def test_a_header_key_that_is_not_utf8_is_invalid_header(key: str | bytes) -> None:
    with pytest.raises(InvalidEvent) as raised:
        decode(event(query="milk"), [(key, b"v"), ("content-type", b"application/json")])
    assert raised.value.reason == "invalid_header" and "header 0" in raised.value.detail


def test_a_header_key_in_another_script_is_fine() -> None:
    assert decode(event(query="milk"), [("类型", b"v")]).query == "milk"


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_a_cache_miss_reads_back_whole_in_either_format(fmt: Literal["json", "protobuf"]) -> None:
    miss = CacheMiss("bread no gluten", "Bread, no gluten", "e-17", datetime(2026, 12, 6, 7, 40, 1, 250000, tzinfo=UTC))
    value, content_type = encode_cache_miss(miss, fmt)
    assert content_type == (PROTOBUF if fmt == "protobuf" else JSON)
    assert decode_cache_miss(value, [("content-type", content_type.encode())]) == miss


@pytest.mark.parametrize(
    ("value", "headers", "says"),
    [
        (b"not json", [], "not JSON"),
        (b'["a"]', [], "a JSON list"),
        (b'{"query": "x"}', [], "no normalized_query"),
        (b'{"normalized_query": "x", "ts": "yesterday"}', [], "not ISO 8601"),
        (b"\xff\xff", [("content-type", PROTOBUF.encode())], "not a qu.v1.CacheMiss"),
    ],
)
def test_a_bad_cache_miss_is_an_error_saying_what_is_wrong(
    value: bytes, headers: list[tuple[str, bytes]], says: str
) -> None:
    with pytest.raises(InvalidCacheMiss, match=says):
        decode_cache_miss(value, headers)
