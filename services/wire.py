"""Bytes on Kafka <-> the engine's domain types: search events in, annotations and dead letters out.

Input events are JSON (parsed with orjson) or protobuf ``qu.v1.SearchEvent``: the
``content-type`` header says which, and JSON is assumed without one, so any Kafka client
can produce plain JSON. Every way an event can be unusable has a short reason code; the
caller sends such events to the dead-letter topic, whole, with that reason.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from qu.v1 import cache_miss_pb2, common_pb2, dead_letter_pb2, head_tags_pb2, query_annotation_pb2, search_event_pb2

from services.domain import Annotation, CacheMiss, RewriteType, Role, SearchRequest, Source
from services.errors import QuError

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
_PROTOBUF_TYPES = {PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"}

Headers = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None


class InvalidEvent(QuError):
    """An input record the engine cannot annotate; ``reason`` is a short code for the dead-letter record."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def header(headers: Headers, name: str) -> str | None:
    """A header's value as text (the last one wins), matched case-insensitively."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: str | None = None
    for key, value in items:
        if key.lower() == name:
            found = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return found


def check_header_keys(headers: Headers) -> None:
    """Raise ``invalid_header`` for a header key that is not UTF-8.

    Kafka header keys are strings; the worker's client hands over a key that is not UTF-8 with its bad
    bytes as lone surrogates (services/kafka_tolerant_records.py) rather than stalling the partition on it.
    """
    if not headers:
        return
    names: Iterable[str | bytes] = headers.keys() if isinstance(headers, Mapping) else (k for k, _ in headers)
    for index, name in enumerate(names):
        if isinstance(name, str) and name.isascii():
            continue  # nearly every key: no encoding work
        raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidEvent("invalid_header", f"header {index} has a key that is not UTF-8: {raw[:64]!r}") from err


def decode_search_event(value: bytes | None, headers: Headers, *, max_query_chars: int) -> SearchRequest:
    """Parse and validate one input record; raises :class:`InvalidEvent` with a reason code."""
    if not value:
        raise InvalidEvent("empty_record", "the record has no value")
    check_header_keys(headers)
    content_type = (header(headers, "content-type") or JSON).split(";")[0].strip().lower()
    if content_type in _PROTOBUF_TYPES:
        request = _from_protobuf(value)
    elif content_type == JSON or content_type.endswith("+json"):
        request = _from_json(value)
    else:
        raise InvalidEvent("unsupported_content_type", f"content-type {content_type!r}: send {JSON} or {PROTOBUF}")
    _validate_query(request.query, max_query_chars)
    if not request.event_id.strip():
        raise InvalidEvent("missing_event_id", "event_id is missing or empty")
    _check_ids(request)
    return request


# event_id is copied into the annotation and the cache miss, the other ids travel with the request: an
# unbounded id would make every record derived from the event as large as the id. UUIDs and ULIDs are 26-36.
MAX_ID_CHARS = 256


def _check_ids(request: SearchRequest) -> None:
    ids = (("event_id", request.event_id), ("user_id", request.user_id), ("session_id", request.session_id))
    for name, value in ids:
        if len(value) > MAX_ID_CHARS:
            raise InvalidEvent("field_too_long", f"{name} has {len(value)} characters, the limit is {MAX_ID_CHARS}")


def _validate_query(query: str, max_chars: int) -> None:
    if not query.strip():
        raise InvalidEvent("missing_query", "query is missing or empty")
    if len(query) > max_chars:
        raise InvalidEvent("query_too_long", f"query has {len(query)} characters, the limit is {max_chars}")
    # NFKC, normalization's first step, makes some characters 18 (U+FDFA), and the limit must hold for what
    # goes on to Redis, Triton and the annotation. Checked here, in C, before the normalizer's per-character
    # work (~20 ms for such a query); the handler checks the normalized query too ("&" -> "and" grows it).
    compatible = len(unicodedata.normalize("NFKC", query))
    if compatible > max_chars:
        raise InvalidEvent(
            "query_too_long",
            f"query has {len(query)} characters but {compatible} in Unicode compatibility form (NFKC), "
            f"the limit is {max_chars}",
        )
    for index, ch in enumerate(query):
        if unicodedata.category(ch) == "Cc":
            raise InvalidEvent("control_characters", f"query has control character U+{ord(ch):04X} at {index}")


def _from_json(value: bytes) -> SearchRequest:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidEvent("invalid_utf8", f"the record is not valid UTF-8 ({err.reason} at byte {err.start})") from err
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as err:
        raise InvalidEvent("invalid_json", f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise InvalidEvent("invalid_json", f"expected a JSON object, got {type(data).__name__}")
    query = data.get("query")
    if query is not None and not isinstance(query, str):
        raise InvalidEvent("invalid_field", f"query must be a string, got {type(query).__name__}")
    context = data.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidEvent("invalid_field", "context must be an object")
    return SearchRequest(
        event_id=_text(data, "event_id"),
        query=query or "",
        user_id=_text(data, "user_id"),
        session_id=_text(data, "session_id"),
        timestamp=_timestamp(data.get("timestamp", data.get("ts"))),
        locale=_text(data, "locale") or "en-US",
        context={str(k): str(v) for k, v in context.items() if v is not None},
    )


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str | int):
        raise InvalidEvent("invalid_field", f"{name} must be a string, got {type(value).__name__}")
    return str(value)


def _timestamp(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError) as err:
        raise InvalidEvent("invalid_field", f"timestamp {value!r} is not ISO 8601 or epoch time") from err
    raise InvalidEvent("invalid_field", f"timestamp must be a string or a number, got {type(value).__name__}")


def _from_protobuf(value: bytes) -> SearchRequest:
    message = search_event_pb2.SearchEvent()
    try:
        message.ParseFromString(value)
    except DecodeError as err:  # also raised for invalid UTF-8 in a string field
        raise InvalidEvent("invalid_protobuf", f"not a qu.v1.SearchEvent ({err})") from err
    context = {}
    if message.HasField("context"):
        context = {
            k: v for k, v in (("store_id", message.context.store_id), ("retailer_id", message.context.retailer_id)) if v
        }
    return SearchRequest(
        event_id=message.event_id,
        query=message.query,
        user_id=message.user_id,
        session_id=message.session_id,
        timestamp=_protobuf_timestamp(message.timestamp) if message.HasField("timestamp") else None,
        locale=message.locale or "en-US",
        context=context,
    )


def _protobuf_timestamp(value: Timestamp) -> datetime:
    # Any int64 seconds and int32 nanos parse; datetime holds years 1-9999 and nanos must be < 1e9.
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as err:
        raise InvalidEvent(
            "invalid_field", f"timestamp seconds={value.seconds} nanos={value.nanos} is out of range ({err})"
        ) from err


def encode_search_event(request: SearchRequest) -> bytes:
    """The protobuf form of a search event (for producers that prefer it, and for tests)."""
    message = search_event_pb2.SearchEvent(
        event_id=request.event_id,
        query=request.query,
        user_id=request.user_id,
        session_id=request.session_id,
        locale=request.locale,
    )
    if request.timestamp is not None:
        message.timestamp.FromDatetime(request.timestamp)
    if request.context:
        message.context.store_id = request.context.get("store_id", "")
        message.context.retailer_id = request.context.get("retailer_id", "")
    return message.SerializeToString()


_ROLES = {
    Role.PRODUCT: common_pb2.ROLE_PRODUCT,
    Role.BRAND: common_pb2.ROLE_BRAND,
    Role.ATTRIBUTE: common_pb2.ROLE_ATTRIBUTE,
}
_REWRITES = {
    RewriteType.SUBSTITUTE: common_pb2.REWRITE_TYPE_SUBSTITUTE,
    RewriteType.BROADER: common_pb2.REWRITE_TYPE_BROADER,
    RewriteType.SYNONYM: common_pb2.REWRITE_TYPE_SYNONYM,
}
_SOURCES = {
    Source.CACHE: query_annotation_pb2.SOURCE_CACHE,
    Source.STUDENT: query_annotation_pb2.SOURCE_STUDENT,
    Source.TEACHER: query_annotation_pb2.SOURCE_TEACHER,
    Source.FALLBACK: query_annotation_pb2.SOURCE_FALLBACK,
}


def annotation_to_protobuf(annotation: Annotation) -> query_annotation_pb2.QueryAnnotation:
    u = annotation.understanding
    message = query_annotation_pb2.QueryAnnotation(
        event_id=annotation.event_id,
        query=annotation.query,
        normalized_query=annotation.normalized_query,
        tags=[
            common_pb2.Tag(
                role=_ROLES[t.role],
                start=t.start,
                end=t.end,
                text=t.text,
                canonical=t.canonical,
                confidence=t.confidence,
            )
            for t in u.tags
        ],
        categories=[common_pb2.CategoryScore(path=list(c.path), score=c.score) for c in u.categories],
        rewrites=[common_pb2.Rewrite(type=_REWRITES[r.type], query=r.query, score=r.score) for r in u.rewrites],
        source=_SOURCES[annotation.source],
        model_version=annotation.model_version,
        guardrails=[
            common_pb2.GuardrailDecision(check=g.check, item=g.item, kept=g.kept, reason=g.reason)
            for g in annotation.guardrails
        ],
        degraded=annotation.degraded,
        timings=query_annotation_pb2.Timings(**annotation.timings.to_json()),
        schema_version=annotation.schema_version,
    )
    if annotation.annotated_at is not None:
        message.annotated_at.FromDatetime(annotation.annotated_at)
    return message


def encode_annotation(annotation: Annotation, fmt: Literal["json", "protobuf"]) -> tuple[bytes, str]:
    """The annotation's bytes and their content type."""
    if fmt == "protobuf":
        return annotation_to_protobuf(annotation).SerializeToString(), PROTOBUF
    return orjson.dumps(annotation.to_json()), JSON


def encode_cache_miss(miss: CacheMiss, fmt: Literal["json", "protobuf"]) -> tuple[bytes, str]:
    """A ``qu.cache-misses.v1`` record (``qu.v1.CacheMiss``, or JSON with its field names) and its content type."""
    if fmt == "protobuf":
        message = cache_miss_pb2.CacheMiss(
            normalized_query=miss.normalized_query, query=miss.query, event_id=miss.event_id
        )
        message.ts.FromDatetime(miss.ts)
        return message.SerializeToString(), PROTOBUF
    row = {
        "normalized_query": miss.normalized_query,
        "query": miss.query,
        "event_id": miss.event_id,
        "ts": miss.ts.isoformat(),
    }
    return orjson.dumps(row), JSON


class InvalidCacheMiss(QuError):
    """A ``qu.cache-misses.v1`` record that is not a cache miss; the message says what is wrong."""


def decode_cache_miss(value: bytes | None, headers: Headers) -> CacheMiss:
    """A cache-miss record in either format (its content-type header; JSON without one); raises InvalidCacheMiss."""
    content_type = header(headers, "content-type")
    if content_type == PROTOBUF:
        try:
            message = cache_miss_pb2.CacheMiss.FromString(value or b"")
        except DecodeError as exc:
            raise InvalidCacheMiss(f"not a qu.v1.CacheMiss ({exc})") from None
        miss = CacheMiss(
            message.normalized_query,
            message.query,
            message.event_id,
            _protobuf_timestamp(message.ts) if message.HasField("ts") else datetime.fromtimestamp(0, UTC),
        )
    else:
        try:
            row = orjson.loads(value or b"")
        except orjson.JSONDecodeError as exc:
            raise InvalidCacheMiss(f"not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise InvalidCacheMiss(f"a JSON {type(row).__name__}, not an object")
        try:
            ts = _timestamp(row.get("ts"))
        except InvalidEvent as exc:
            raise InvalidCacheMiss(str(exc)) from None
        miss = CacheMiss(
            str(row.get("normalized_query") or ""),
            str(row.get("query") or ""),
            str(row.get("event_id") or ""),
            ts or datetime.fromtimestamp(0, UTC),
        )
    if not miss.normalized_query:
        raise InvalidCacheMiss("it has no normalized_query")
    return miss


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """Where an input record came from, for the dead-letter record."""

    topic: str
    partition: int
    offset: int


_MESSAGES: dict[str, type[Any]] = {
    "QueryAnnotation": query_annotation_pb2.QueryAnnotation,
    "SearchEvent": search_event_pb2.SearchEvent,
    "DeadLetter": dead_letter_pb2.DeadLetter,
    "HeadTags": head_tags_pb2.HeadTags,
}
_TOPIC_MESSAGES = {
    "qu.query-annotations.v1": "QueryAnnotation",
    "qu.search-events.v1": "SearchEvent",
    "qu.dead-letter.v1": "DeadLetter",
    "qu.head-tags.v1": "HeadTags",
}


class UndecodableRecord(QuError):
    """A record that says it is its topic's protobuf message and is not."""


def record_to_json(topic: str, value: bytes | None, headers: Headers) -> Any:
    """A record's value as JSON-able data, for people and shell pipes: JSON as is, the topic's
    protobuf message decoded (bytes fields as base64), anything else as UTF-8 text.

    Raises :class:`UndecodableRecord` for a protobuf value that is not the topic's message.
    """
    if value is None:
        return None
    content_type = (header(headers, "content-type") or "").split(";")[0].strip().lower()
    if content_type in _PROTOBUF_TYPES and topic in _TOPIC_MESSAGES:
        name = _TOPIC_MESSAGES[topic]
        try:
            message = _MESSAGES[name].FromString(value)
        except DecodeError as err:  # also raised for invalid UTF-8 in a string field
            raise UndecodableRecord(
                f"the value ({len(value)} bytes, {content_type}) is not a qu.v1.{name}: {err}"
            ) from err
        return json_format.MessageToDict(message, preserving_proto_field_name=True)
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value.decode("utf-8", "replace")
