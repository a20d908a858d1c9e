"""The annotate handler: each input record in, one annotation (or one dead letter) out.

Plain async code with no broker in sight: the Faust agent decodes nothing itself, it hands
a batch of records' bytes here and sends what comes back. The order of the real-time path:

1. decode and validate (bad input -> dead letter, never an exception to the agent);
2. normalize; look the batch's keys up in the head-tag cache (one lookup per batch);
3. on a miss, ask the student; if the student is unavailable or late, tag with the catalog
   lexicons instead (source=fallback, degraded=true) so no event goes unanswered;
4. guardrails, then map tag offsets back to the query as typed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, cast

from cachetools import LRUCache
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Tracer

from services.annotation.metrics import AnnotateMetrics, StudentResult
from services.annotation.tracing import default_tracer, recording_span, shared_call
from services.circuit_breaker import CircuitOpen
from services.dead_letter import DEAD_LETTER_LIMITS, encode_dead_letter
from services.domain import (
    Annotation,
    CacheMiss,
    GuardrailDecision,
    SearchRequest,
    Source,
    Tag,
    Timings,
    Understanding,
)
from services.errors import InvalidAnswer, ServiceUnavailable
from services.guardrails import Guardrails
from services.normalize import NormalizedText, normalize_with_offsets
from services.wire import Headers, InvalidEvent, RecordOrigin, decode_search_event

FALLBACK_VERSION = "catalog-lexicon-fallback"
# Head-tag answers whose guardrail verdict is kept: as many as the cache store keeps decoded (DECODED_MAX).
CHECKED_HITS_MAX = 4096
FALLBACK_LOG_EVERY_S = 1.0
BAD_INPUT_LOG_EVERY_S = 10.0
log = logging.getLogger(__name__)


class CachedAnswer(Protocol):
    @property
    def understanding(self) -> Understanding: ...

    @property
    def teacher_version(self) -> str: ...


class HeadTagCache(Protocol):
    async def get_many(self, normalized_queries: Sequence[str]) -> Sequence[CachedAnswer | None]:
        """One answer (or None) per query, in order, from one lookup; raises ServiceUnavailable when the
        cache cannot be reached."""
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
    cache_miss: CacheMiss | None = None  # for qu.cache-misses.v1 (encoded by services.wire, as annotations are)
    dead_letter: bytes | None = None  # qu.v1.DeadLetter for qu.dead-letter.v1
    reason: str = ""  # why it was dead-lettered


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One input record as the broker gave it, with the context of the worker's span for it (if any)."""

    value: bytes | None
    key: bytes | None
    headers: Headers
    origin: RecordOrigin
    timestamp: float | None = None  # the Kafka record's timestamp, seconds since the epoch
    context: Context | None = None  # its `process` span's context: the handler's spans for it go under it


@dataclass(frozen=True, slots=True)
class _Checked:
    """The guardrails' verdict on one cached answer: ``source`` is the answer it was made for."""

    source: Understanding
    checked: Understanding
    decisions: list[GuardrailDecision]


# Called with (position in the batch, outcome) as soon as each outcome is known; see handle_batch.
OnOutcome = Callable[[int, Outcome], Awaitable[None]]


@dataclass(slots=True)
class _Parsed:
    """A record that decoded and normalized: it goes on to the cache and maybe the student."""

    index: int
    record: InputRecord
    request: SearchRequest
    normalized: NormalizedText
    started: float
    timings: Timings


class AnnotateHandler:
    def __init__(
        self,
        *,
        cache: HeadTagCache,
        student: Student,
        fallback: FallbackTagger,
        guardrails: Guardrails,
        max_query_chars: int,
        max_event_bytes: int = 64 * 1024,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: AnnotateMetrics | None = None,
        tracer: Tracer | None = None,
        checked_hits_max: int = CHECKED_HITS_MAX,
    ) -> None:
        self.cache = cache
        self.student = student
        self.fallback = fallback
        self.guardrails = guardrails
        self.max_query_chars = max_query_chars
        self.max_event_bytes = max_event_bytes
        self.clock = clock
        self.metrics = metrics or AnnotateMetrics()
        self.tracer = tracer or default_tracer()
        self._fallback_logged_at = -FALLBACK_LOG_EVERY_S
        self._fallbacks_unlogged = 0
        self._bad_input_logged_at = -BAD_INPUT_LOG_EVERY_S
        self._bad_input_unlogged: Counter[str] = Counter()
        # A head query is served thousands of times from one cached answer, and the guardrails' verdict on it is
        # the same each time (their catalog and thresholds are fixed for the process): kept, not made again. A
        # third of a hit's CPU in the handler was this check (docs/BENCHMARKS.md).
        self._checked: LRUCache[tuple[str, str], _Checked] | None = (
            LRUCache(maxsize=checked_hits_max) if checked_hits_max > 0 else None
        )

    async def handle(self, value: bytes | None, key: bytes | None, headers: Headers, origin: RecordOrigin) -> Outcome:
        """One record: :meth:`handle_batch` of one."""
        return (await self.handle_batch([InputRecord(value, key, headers, origin)]))[0]

    async def handle_batch(self, records: Sequence[InputRecord], on_outcome: OnOutcome | None = None) -> list[Outcome]:
        """One outcome per record, in order. Never raises for one record: an unexpected failure dead-letters
        that record (or the records it concerns), whole, with the error, so the stream goes on and nothing is lost.

        The whole batch costs one cache lookup (its distinct queries) and one student call per distinct
        missed query, made concurrently (the student client batches them); hits cost no task each.
        ``on_outcome`` is awaited with each outcome as soon as it is known — bad records and hits right
        after the lookup, misses as the student answers — so a slow miss does not hold up the batch's
        hits. An exception raised by ``on_outcome`` is not a record's failure: it ends the call (the
        student calls still running are cancelled) and reaches the caller.
        """
        outcomes: list[Outcome | None] = [None] * len(records)

        async def deliver(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            if on_outcome is not None:
                await on_outcome(index, outcome)

        parsed: list[_Parsed] = []
        for index, record in enumerate(records):
            item = self._parse(index, record)
            if isinstance(item, Outcome):
                await deliver(index, item)
            else:
                parsed.append(item)
        if parsed:
            await self._answer(parsed, deliver)
        return cast(list[Outcome], outcomes)  # every path above delivers each record once

    def _parse(self, index: int, record: InputRecord) -> _Parsed | Outcome:
        started = time.perf_counter()
        try:
            try:
                if record.value is not None and len(record.value) > self.max_event_bytes:
                    # Checked before parsing: a huge record costs the event loop its size in CPU to decode.
                    raise InvalidEvent(
                        "record_too_large",
                        f"the record has {len(record.value)} bytes, the limit is {self.max_event_bytes} "
                        "(setting QU_MAX_EVENT_BYTES)",
                    )
                request = decode_search_event(record.value, record.headers, max_query_chars=self.max_query_chars)
                normalized = normalize_with_offsets(request.query)
                if not normalized.text:
                    raise InvalidEvent("empty_after_normalization", f"query {request.query!r} has no words")
                if len(normalized.text) > self.max_query_chars:
                    # The decoder bounds the typed query and its NFKC form; "&" -> " and " still grows it.
                    raise InvalidEvent(
                        "query_too_long",
                        f"query has {len(request.query)} characters but {len(normalized.text)} after "
                        f"normalization, the limit is {self.max_query_chars}",
                    )
            except InvalidEvent as err:
                self._note_bad_input(record, err)
                return self._dead_letter(record, err)
        except Exception as exc:
            return self._internal_error(record, exc)
        return _Parsed(index, record, request, normalized, started, Timings(decode_ms=_ms_since(started)))

    async def _answer(self, parsed: list[_Parsed], deliver: OnOutcome) -> None:
        lap = time.perf_counter()
        queries = list(dict.fromkeys(p.normalized.text for p in parsed))  # a popular query is looked up once
        available = True
        try:
            with shared_call(
                self.tracer,
                "head-tag lookup",
                [p.record.context for p in parsed],
                attributes={"qu.queries": len(queries)},
            ) as span:
                try:
                    answers = dict(zip(queries, await self.cache.get_many(queries), strict=True))
                except ServiceUnavailable as err:
                    answers, available = {}, False  # Redis down: every event goes to the student until it returns
                    if span is not None:
                        span.set_attribute("qu.cache.unavailable", str(err)[:300])
                if span is not None:
                    span.set_attribute("qu.hits", sum(1 for a in answers.values() if a is not None))
        except Exception as exc:  # what handle() would do for each record alone
            for p in parsed:
                await deliver(p.index, self._internal_error(p.record, exc))
            return
        cache_ms = _ms_since(lap)

        hits: list[tuple[_Parsed, CachedAnswer]] = []
        misses: dict[str, list[_Parsed]] = {}
        for p in parsed:
            p.timings.cache_ms = cache_ms
            cached = answers.get(p.normalized.text)
            if cached is None:
                misses.setdefault(p.normalized.text, []).append(p)
            else:
                hits.append((p, cached))
        self.metrics.count_lookups(len(hits), len(parsed) - len(hits), available=available)
        # The student calls start first: they are the slow part, and the hits are sent while they run.
        tasks = [asyncio.create_task(self._answer_misses(query, group, deliver)) for query, group in misses.items()]
        try:
            for p, cached in hits:
                try:
                    outcome = self._annotate(p, cached.understanding, Source.CACHE, cached.teacher_version, hit=cached)
                except Exception as exc:
                    outcome = self._internal_error(p.record, exc)
                await deliver(p.index, outcome)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # a no-op for finished ones; stops the rest when delivering failed

    def _verdict_on_hit(self, cached: CachedAnswer, query: str) -> _Checked:
        """The guardrails' verdict on a cached answer: made once per answer the cache store decoded.

        The store hands out the same decoded object for the same stored bytes, so the object's identity says the
        verdict was made for this answer; another answer under the same version and query (a new run, or the
        store's copy decoded again) is checked afresh."""
        key = (cached.teacher_version, query)
        kept = self._checked.get(key) if self._checked is not None else None
        if kept is not None and kept.source is cached.understanding:
            return kept
        checked, decisions = self.guardrails.check(cached.understanding, query)
        verdict = _Checked(cached.understanding, checked, decisions)
        if self._checked is not None:
            self._checked[key] = verdict
        return verdict

    async def _answer_misses(self, query: str, group: list[_Parsed], deliver: OnOutcome) -> None:
        """Every record of the batch whose normalized query is ``query``: one student call for all of them."""
        lap = time.perf_counter()
        try:
            with shared_call(self.tracer, "student", [p.record.context for p in group], kind=SpanKind.INTERNAL) as span:
                understanding, source, version, degraded = await self._understand_miss(query)
                if span is not None:
                    span.set_attributes({"qu.source": source.value, "qu.model_version": version})
        except Exception as exc:
            for p in group:
                await deliver(p.index, self._internal_error(p.record, exc))
            return
        student_ms = _ms_since(lap)
        for p in group:
            try:
                p.timings.student_ms = student_ms
                miss = CacheMiss(query, p.request.query, p.request.event_id, self.clock())
                outcome = self._annotate(p, understanding, source, version, degraded=degraded, miss=miss)
            except Exception as exc:
                outcome = self._internal_error(p.record, exc)
            await deliver(p.index, outcome)

    async def _understand_miss(self, query: str) -> tuple[Understanding, Source, str, bool]:
        started = time.perf_counter()
        try:
            understanding = await self.student.understand(query)
            self._record_student(started, "answered")
            return understanding, Source.STUDENT, understanding.version, False
        except ServiceUnavailable as err:
            self._record_student(started, _student_result(err))
            self._warn_fallback(err)
            return (
                Understanding(self.fallback.tag(query), version=FALLBACK_VERSION),
                Source.FALLBACK,
                FALLBACK_VERSION,
                True,
            )

    def _record_student(self, started: float, result: StudentResult) -> None:
        self.metrics.student.record(time.perf_counter() - started, {"qu.student.result": result})

    def _warn_fallback(self, err: ServiceUnavailable) -> None:
        # At most one line per FALLBACK_LOG_EVERY_S: an outage at hundreds of misses a second would otherwise
        # spend the worker's CPU on writing the same warning (the annotations say degraded=true anyway).
        self._fallbacks_unlogged += 1
        now = time.monotonic()
        if now - self._fallback_logged_at >= FALLBACK_LOG_EVERY_S:
            log.warning(
                "student unavailable, answering from the catalog lexicons (%d answers since the last message): %s",
                self._fallbacks_unlogged,
                err,
            )
            self._fallback_logged_at, self._fallbacks_unlogged = now, 0

    def _note_bad_input(self, record: InputRecord, err: InvalidEvent) -> None:
        # Bad input is the producer's to fix and each record's dead letter says why; a line per record would
        # let one broken producer flood the log. One line per BAD_INPUT_LOG_EVERY_S: counts and the latest.
        self._bad_input_unlogged[err.reason] += 1
        now = time.monotonic()
        if now - self._bad_input_logged_at >= BAD_INPUT_LOG_EVERY_S:
            origin = record.origin
            counts = ", ".join(f"{reason} {n}" for reason, n in self._bad_input_unlogged.most_common())
            log.warning(
                "dead-lettered %d records since the last message (%s); the latest: %s[%d]@%d %s: %.200s",
                self._bad_input_unlogged.total(),
                counts,
                origin.topic,
                origin.partition,
                origin.offset,
                err.reason,
                err.detail,
            )
            self._bad_input_logged_at = now
            self._bad_input_unlogged.clear()

    def _annotate(
        self,
        p: _Parsed,
        understanding: Understanding,
        source: Source,
        version: str,
        *,
        degraded: bool = False,
        miss: CacheMiss | None = None,
        hit: CachedAnswer | None = None,
    ) -> Outcome:
        lap = time.perf_counter()
        if hit is None:
            checked, decisions = self.guardrails.check(understanding, p.normalized.text)
        else:  # the verdict on the cached answer, made once for all the events it serves
            verdict = self._verdict_on_hit(hit, p.normalized.text)
            checked, decisions = verdict.checked, verdict.decisions
        p.timings.guardrails_ms = _ms_since(lap)
        # A new Understanding, never an edit: a cached answer is shared by every event that hits it.
        tags = [_to_original(tag, p.normalized) for tag in checked.tags]
        p.timings.total_ms = _ms_since(p.started)
        self.metrics.processing.record(p.timings.total_ms / 1000.0)
        span = recording_span(p.record.context)
        if span is not None:
            span.set_attribute("qu.event_id", p.request.event_id)
            _describe(span, source, version, degraded, decisions)
        annotation = Annotation(
            event_id=p.request.event_id,
            query=p.request.query,
            normalized_query=p.normalized.text,
            understanding=Understanding(tags, checked.categories, checked.rewrites, checked.version),
            source=source,
            model_version=version,
            guardrails=decisions,
            degraded=degraded,
            timings=p.timings,
            annotated_at=self.clock(),
        )
        return Outcome(annotation=annotation, key=p.normalized.text.encode(), cache_miss=miss)

    def _dead_letter(self, record: InputRecord, err: InvalidEvent) -> Outcome:
        letter = encode_dead_letter(record.value, record.key, record.headers, err, record.origin, now=self.clock())
        return Outcome(dead_letter=letter, key=_dead_letter_key(record.key), reason=err.reason)

    def _internal_error(self, record: InputRecord, exc: Exception) -> Outcome:
        origin = record.origin
        log.error("annotating %s[%d]@%d failed", origin.topic, origin.partition, origin.offset, exc_info=exc)
        return self._dead_letter(record, InvalidEvent("internal_error", f"{type(exc).__name__}: {exc}"))


def _student_result(err: ServiceUnavailable) -> StudentResult:
    if isinstance(err, CircuitOpen):
        return "circuit_open"
    return "malformed" if isinstance(err, InvalidAnswer) else "unavailable"


def _describe(span: Span, source: Source, version: str, degraded: bool, decisions: list[GuardrailDecision]) -> None:
    """What an SRE asks of one event's span: who answered, degraded or not, and what the guardrails dropped."""
    span.set_attributes({"qu.source": source.value, "qu.model_version": version, "qu.degraded": degraded})
    dropped = [d for d in decisions if not d.kept]
    span.set_attribute("qu.guardrails.dropped", len(dropped))
    for decision in dropped:
        span.add_event(
            "guardrail dropped",
            {
                "qu.guardrail.check": decision.check,
                "qu.guardrail.item": decision.item[:200],
                "qu.guardrail.reason": decision.reason,
            },
        )


def _dead_letter_key(key: bytes | None) -> bytes:
    """The input's key, or its SHA-256 when it is too large to be a key (it stays in the dead letter's prefix)."""
    if key is None or len(key) <= DEAD_LETTER_LIMITS.key_bytes:
        return key or b""
    return hashlib.sha256(key).hexdigest().encode()


def _to_original(tag: Tag, normalized: NormalizedText) -> Tag:
    """A tag made on the normalized query, re-pointed at the characters the shopper typed."""
    start, end = normalized.to_original(tag.start, tag.end)
    return Tag(tag.role, start, end, normalized.original[start:end], tag.canonical, tag.confidence)


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
