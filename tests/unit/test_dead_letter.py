"""Dead letters keep what they were given, and can never be too large to send."""

from __future__ import annotations

import hashlib

from qu.v1 import dead_letter_pb2

from services.dead_letter import DEAD_LETTER_LIMITS, MAX_DEAD_LETTER_BYTES, clip_text, encode_dead_letter
from services.wire import InvalidEvent, RecordOrigin

ORIGIN = RecordOrigin("qu.search-events.v1", 2, 41)
# The producer's default limit (aiokafka max_request_size, Faust producer_max_request_size).
PRODUCER_LIMIT = 1_000_000


def test_a_small_record_is_kept_whole() -> None:
    error = InvalidEvent("invalid_json", "not valid JSON")
    raw = encode_dead_letter(b"{oops", b"k", [("content-type", b"application/json")], error, ORIGIN)
    letter = dead_letter_pb2.DeadLetter.FromString(raw)
    assert (letter.original, letter.original_key, letter.reason) == (b"{oops", b"k", "invalid_json")
    assert (letter.topic, letter.partition, letter.offset) == ("qu.search-events.v1", 2, 41)
    assert letter.headers["content-type"] == b"application/json"
    assert (letter.original_size, letter.original_truncated) == (5, False)
    assert letter.original_sha256 == hashlib.sha256(b"{oops").hexdigest()


def test_a_large_record_keeps_a_prefix_its_size_and_its_hash() -> None:
    value = b'{"query": "' + b"x" * 1_100_000 + b'"}'
    raw = encode_dead_letter(value, None, None, InvalidEvent("record_too_large", "too large"), ORIGIN)
    letter = dead_letter_pb2.DeadLetter.FromString(raw)
    assert letter.original == value[: DEAD_LETTER_LIMITS.original_bytes]
    assert letter.original_size == len(value)
    assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
    assert letter.original_truncated
    assert len(raw) < MAX_DEAD_LETTER_BYTES


def test_the_worst_input_still_makes_a_dead_letter_the_producer_accepts() -> None:
    # Everything at once, each part far over its limit, in characters that take 4 bytes in UTF-8.
    huge = "\U0001f600" * 300_000
    headers = [(f"{i}-{huge[:5000]}", b"v" * 900_000) for i in range(500)]
    error = InvalidEvent("x" * 10_000, f"timestamp {huge!r} is not ISO 8601")
    raw = encode_dead_letter(b"v" * 5_000_000, b"k" * 2_000_000, headers, error, ORIGIN)
    assert MAX_DEAD_LETTER_BYTES < PRODUCER_LIMIT
    assert len(raw) <= MAX_DEAD_LETTER_BYTES
    letter = dead_letter_pb2.DeadLetter.FromString(raw)
    assert len(letter.headers) == DEAD_LETTER_LIMITS.header_count
    assert len(letter.detail) <= DEAD_LETTER_LIMITS.detail_chars
    assert letter.detail.endswith("more characters]")
    assert letter.original_size == 5_000_000


def test_a_header_key_that_is_not_utf8_is_kept_escaped() -> None:
    raw = encode_dead_letter(b"{}", None, [(b"\xffbad", b"1")], InvalidEvent("invalid_header", "bad"), ORIGIN)  # type: ignore[list-item]
    letter = dead_letter_pb2.DeadLetter.FromString(raw)
    assert dict(letter.headers) == {"\\xffbad": b"1"}


def test_clip_text_says_how_much_it_cut() -> None:
    assert clip_text("short", 10) == "short"
    clipped = clip_text("a" * 100, 40)
    kept = clipped.index("…")
    assert len(clipped) <= 40
    assert clipped == "a" * kept + f"… [{100 - kept} more characters]"
