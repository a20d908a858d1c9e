"""The annotate handler: one input record in, one annotation (or one dead letter) out.

Plain async code with no broker in sight: the Faust agent decodes nothing itself, it hands
the record's bytes here and sends what comes back. The order of the real-time path:

1. decode and validate (bad input -> dead letter, never an exception to the agent);
2. normalize; look the key up in the head-tag cache;
3. on a miss, ask the student; if the student is unavailable or late, tag with the catalog
   lexicons instead (source=fallback, degraded=true) so no event goes unanswered;
4. guardrails, then map tag offsets back to the query as typed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import orjson

from services.annotation.model import Annotation, Source, Tag, Timings, Understanding
from services.errors import ServiceUnavailable
from services.guardrails import Guardrails
from services.normalize import NormalizedText, normalize_with_offsets
from services.wire import Headers, InvalidEvent, RecordOrigin, decode_search_event, encode_dead_letter

FALLBACK_VERSION = "catalog-lexicon-fallback"
log = logging.getLogger(__name__)


class CachedAnswer(Protocol):
    @property
    def understanding(self) -> Understanding: ...

    @property
    def teacher_version(self) -> str: ...


class HeadTagCache(Protocol):
    async def get(self, normalized_query: str) -> CachedAnswer | None:
        """The cached answer, or None; raises ServiceUnavailable when the cache cannot be reached."""
        ...


class Student(Protocol):
    async def understand(self, normalized_query: str) -> Understanding:
        """The student's answer; raises ServiceUnavailable when it is down or past its deadline."""
        ...


class FallbackTagger(Protocol):
    def tag(self, normalized: str) -> list[Tag]: ...


@dataclass(slots=True)
class Outcome:
    """What the agent sends for one input record: an annotation and maybe a cache miss, or a dead letter."""

    annotation: Annotation | None = None
    key: bytes = b""  # the normalized query: one query, one partition
    cache_miss: bytes | None = None  # JSON for qu.cache-misses.v1
    dead_letter: bytes | None = None  # qu.v1.DeadLetter for qu.dead-letter.v1
    reason: str = ""  # why it was dead-lettered


class AnnotateHandler:
    def __init__(
        self,
        *,
        cache: HeadTagCache,
        student: Student,
        fallback: FallbackTagger,
        guardrails: Guardrails,
        max_query_chars: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cache = cache
        self.student = student
        self.fallback = fallback
        self.guardrails = guardrails
        self.max_query_chars = max_query_chars
        self.clock = clock

    async def handle(self, value: bytes | None, key: bytes | None, headers: Headers, origin: RecordOrigin) -> Outcome:
        """Never raises for one record: an unexpected failure dead-letters the record, whole, with the error,
        so the stream goes on and nothing is lost."""
        try:
            return await self._handle(value, key, headers, origin)
        except Exception as exc:
            log.exception("annotating %s[%d]@%d failed", origin.topic, origin.partition, origin.offset)
            error = InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}")
            letter = encode_dead_letter(value, key, headers, error, origin, now=self.clock())
            return Outcome(dead_letter=letter, key=key or b"", reason=error.reason)

    async def _handle(self, value: bytes | None, key: bytes | None, headers: Headers, origin: RecordOrigin) -> Outcome:
        started = time.perf_counter()
        timings = Timings()
        try:
            request = decode_search_event(value, headers, max_query_chars=self.max_query_chars)
            normalized = normalize_with_offsets(request.query)
            if not normalized.text:
                raise InvalidEvent("empty_after_normalization", f"query {request.query!r} has no words")
        except InvalidEvent as err:
            letter = encode_dead_letter(value, key, headers, err, origin, now=self.clock())
            return Outcome(dead_letter=letter, key=key or b"", reason=err.reason)
        timings.decode_ms = _ms_since(started)

        lap = time.perf_counter()
        cached: CachedAnswer | None = None
        try:
            cached = await self.cache.get(normalized.text)
        except ServiceUnavailable:
            cached = None  # Redis down: every event goes to the student until it returns
        timings.cache_ms = _ms_since(lap)

        degraded = False
        miss: bytes | None = None
        if cached is not None:
            understanding, source, version = cached.understanding, Source.CACHE, cached.teacher_version
        else:
            miss = orjson.dumps(
                {
                    "normalized_query": normalized.text,
                    "query": request.query,
                    "event_id": request.event_id,
                    "ts": self.clock().isoformat(),
                }
            )
            lap = time.perf_counter()
            try:
                understanding = await self.student.understand(normalized.text)
                source, version = Source.STUDENT, understanding.version
            except ServiceUnavailable as err:
                log.warning("student unavailable, answering from the catalog lexicons: %s", err)
                understanding = Understanding(self.fallback.tag(normalized.text), version=FALLBACK_VERSION)
                source, version, degraded = Source.FALLBACK, FALLBACK_VERSION, True
            timings.student_ms = _ms_since(lap)

        lap = time.perf_counter()
        checked, decisions = self.guardrails.check(understanding, normalized.text)
        timings.guardrails_ms = _ms_since(lap)
        checked.tags = [_to_original(tag, normalized) for tag in checked.tags]
        timings.total_ms = _ms_since(started)
        annotation = Annotation(
            event_id=request.event_id,
            query=request.query,
            normalized_query=normalized.text,
            understanding=checked,
            source=source,
            model_version=version,
            guardrails=decisions,
            degraded=degraded,
            timings=timings,
            annotated_at=self.clock(),
        )
        return Outcome(annotation=annotation, key=normalized.text.encode(), cache_miss=miss)


def _to_original(tag: Tag, normalized: NormalizedText) -> Tag:
    """A tag made on the normalized query, re-pointed at the characters the shopper typed."""
    start, end = normalized.to_original(tag.start, tag.end)
    return Tag(tag.role, start, end, normalized.original[start:end], tag.canonical, tag.confidence)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
