"""Dead letters: an input the engine could not annotate, kept with its reason — and always small enough to send.

A dead letter copies what it was given (the value, the key, the headers) and says why. Copied whole,
a large input makes a dead letter larger than the broker accepts, and a dead letter that cannot be
sent is a record lost. So every part is bounded here (:data:`DEAD_LETTER_LIMITS`): a value beyond the
limit is kept as a prefix with its size and SHA-256 (to find the record again in the source), and the
key, the detail and the headers are clipped likewise. Whatever the input, the encoded dead letter stays
under :data:`MAX_DEAD_LETTER_BYTES`, far below the producer's 1,000,000-byte default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from qu.v1 import dead_letter_pb2

from services.wire import Headers, InvalidEvent, RecordOrigin


@dataclass(frozen=True, slots=True)
class DeadLetterLimits:
    original_bytes: int = 64 * 1024  # a search event is well under 4 KiB: 64 KiB keeps any real one whole
    key_bytes: int = 1024
    detail_chars: int = 1024
    header_count: int = 64
    header_key_chars: int = 256
    header_value_bytes: int = 1024
    reason_chars: int = 64

    @property
    def max_encoded_bytes(self) -> int:
        """An upper bound of the encoded size (UTF-8 is at most 4 bytes a character; 64 bytes of framing a field)."""
        headers = self.header_count * (4 * self.header_key_chars + self.header_value_bytes + 64)
        text = 4 * (self.detail_chars + self.reason_chars) + 4 * 1024  # the detail, reason, topic and hash
        return self.original_bytes + self.key_bytes + headers + text + 1024


DEAD_LETTER_LIMITS = DeadLetterLimits()
MAX_DEAD_LETTER_BYTES = DEAD_LETTER_LIMITS.max_encoded_bytes


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut (for details that echo the input)."""
    if len(text) <= limit:
        return text
    # The marker's own length depends on the count it prints: size it for the largest count it can print.
    keep = max(0, limit - len(f"… [{len(text)} more characters]"))
    return text[:keep] + f"… [{len(text) - keep} more characters]"


def encode_dead_letter(
    value: bytes | None,
    key: bytes | None,
    headers: Headers,
    error: InvalidEvent,
    origin: RecordOrigin,
    *,
    now: datetime | None = None,
    limits: DeadLetterLimits = DEAD_LETTER_LIMITS,
) -> bytes:
    """A ``qu.v1.DeadLetter``: the original record (whole when it fits the limits), the reason, where it came from."""
    value = value or b""
    key = key or b""
    failed_at = Timestamp()
    failed_at.FromDatetime(now or datetime.now(UTC))
    kept_headers, headers_clipped = _clip_headers(headers, limits)
    truncated = len(value) > limits.original_bytes or len(key) > limits.key_bytes or headers_clipped
    detail = clip_text(error.detail, limits.detail_chars)
    truncated = truncated or detail != error.detail
    return dead_letter_pb2.DeadLetter(
        original=value[: limits.original_bytes],
        original_key=key[: limits.key_bytes],
        reason=clip_text(error.reason, limits.reason_chars),
        detail=detail,
        topic=clip_text(origin.topic, 255),
        partition=origin.partition,
        offset=origin.offset,
        failed_at=failed_at,
        headers=kept_headers,
        original_size=len(value),
        original_sha256=hashlib.sha256(value).hexdigest(),
        original_truncated=truncated,
    ).SerializeToString()


def _clip_headers(headers: Headers, limits: DeadLetterLimits) -> tuple[dict[str, bytes], bool]:
    """The headers as a protobuf map (str keys), clipped to the limits; and whether anything was cut."""
    if not headers:
        return {}, False
    items = list(headers.items() if isinstance(headers, Mapping) else headers)
    clipped = len(items) > limits.header_count
    kept: dict[str, bytes] = {}
    for name, raw in items[: limits.header_count]:
        # A key that is not valid UTF-8 (bytes, or lone surrogates from services/kafka_tolerant_records.py) cannot be a
        # protobuf string: it is kept readable, its bad bytes escaped.
        raw_name = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else bytes(name)
        text = raw_name.decode("utf-8", "backslashreplace")
        data = raw.encode() if isinstance(raw, str) else (raw or b"")
        short_key = text[: limits.header_key_chars]
        clipped = clipped or short_key != text or len(data) > limits.header_value_bytes
        kept[short_key] = data[: limits.header_value_bytes]
    return kept, clipped
