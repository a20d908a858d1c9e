"""Delivering a batch's outcomes to Kafka: a record is acknowledged only once its outcome is on the broker.

The annotate agent hands each batch to the handler with :meth:`BatchDelivery.on_outcome` as its
callback, so every outcome is queued as soon as it is known, then awaits :meth:`BatchDelivery.wait`
before it acknowledges the batch's records. Two kinds of failure, two answers:

- **The broker or client refuses this record** (too large, invalid): that is the record's fault and
  retrying cannot help, so its outcome becomes a bounded dead letter naming the refusal, and the
  stream goes on (``is_rejection`` tells these errors apart; it belongs to the Kafka client's layer).
- **Anything else** (a timeout, the broker gone, the producer stopped): :class:`UndeliveredOutcome`
  is raised and no record of the batch is acknowledged. The worker must stop without committing
  them; its supervisor starts it again and it re-reads them (duplicates, never losses).

Plain async code behind a Protocol: no broker client in sight, tested with in-memory fakes and
through the real worker.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from services.annotation.handler import InputRecord, Outcome
from services.annotation.metrics import AnnotateMetrics
from services.annotation.tracing import default_tracer, recording_span, send_span
from services.dead_letter import clip_text, encode_dead_letter
from services.errors import QuError
from services.telemetry.kafka_headers import inject_context
from services.topics import CACHE_MISSES, DEAD_LETTER, QUERY_ANNOTATIONS
from services.wire import PROTOBUF, InvalidEvent, encode_annotation, encode_cache_miss

log = logging.getLogger(__name__)

KafkaHeaders = list[tuple[str, bytes]]
OutgoingRecord = tuple[str, bytes | None, bytes, KafkaHeaders]  # topic, key, value, headers


class RecordProducer(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders) -> Awaitable[object]:
        """Queue one record; returns what resolves once the broker has it. May raise at once for a
        record the client refuses (e.g. larger than its limit)."""
        ...


class UndeliveredOutcome(QuError):
    """An outcome the broker did not take, for a reason that is not the record's: stop without committing."""

    def __init__(self, record: InputRecord, error: BaseException) -> None:
        self.record = record
        self.error = error
        origin = record.origin
        super().__init__(
            f"the outcome of {origin.topic}[{origin.partition}]@{origin.offset} was not delivered "
            f"({type(error).__name__}: {error}); its offset must not be committed"
        )


@dataclass(slots=True)
class _Sent:
    index: int
    outcome: Outcome
    futures: list[Awaitable[object]] = field(default_factory=list)
    substituted: bool = False  # already replaced by a dead letter: a second refusal is not the record's fault
    spans: list[Span] = field(default_factory=list)  # `send` spans of a sampled record, ended once delivered


class BatchDelivery:
    """The outcomes of one batch of ``records`` on their way to the broker."""

    def __init__(
        self,
        producer: RecordProducer,
        records: Sequence[InputRecord],
        *,
        annotation_format: Literal["json", "protobuf"],
        is_rejection: Callable[[BaseException], bool],
        on_rejected: Callable[[str], None] = lambda _reason: None,
        metrics: AnnotateMetrics | None = None,
        tracer: Tracer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.producer = producer
        self.records = records
        self.annotation_format = annotation_format
        self.is_rejection = is_rejection
        self.on_rejected = on_rejected
        self.metrics = metrics or AnnotateMetrics()
        self.tracer = tracer or default_tracer()
        self.clock = clock
        self._sent: list[_Sent] = []
        self.metrics.count_events(len(records))
        self.metrics.batch_size.record(len(records))

    async def on_outcome(self, index: int, outcome: Outcome) -> None:
        """The handler's callback: queue the outcome's records now."""
        sent = _Sent(index, outcome)
        self._sent.append(sent)
        await self._queue(sent)

    async def wait(self) -> None:
        """Return once every record's outcome is on the broker; raises :class:`UndeliveredOutcome` otherwise.
        Each record's spans end here: delivered, or with the error that stops the worker."""
        # Counted per batch, not per record: one counter add per (source, degraded) and per reason. What was
        # delivered before a failure is counted all the same.
        annotated: Counter[tuple[str, bool]] = Counter()
        dead: Counter[str] = Counter()
        try:
            for sent in self._sent:
                while True:
                    try:
                        for future in sent.futures:
                            await future
                        break
                    except Exception as exc:
                        await self._refused(sent, exc)  # requeues a dead letter, or raises
                self._delivered(sent, annotated, dead)
        except BaseException as exc:
            self._end_spans(exc)
            raise
        finally:
            self.metrics.count_annotations(annotated)
            self.metrics.count_dead_letters(dead)
        self._end_spans(None)

    def _delivered(self, sent: _Sent, annotated: Counter[tuple[str, bool]], dead: Counter[str]) -> None:
        for span in sent.spans:
            span.end()
        sent.spans = []
        outcome, record = sent.outcome, self.records[sent.index]
        if outcome.annotation is not None:
            annotation = outcome.annotation
            annotated[(annotation.source.value, annotation.degraded)] += 1
        else:
            dead[outcome.reason] += 1
            process = recording_span(record.context)
            if process is not None:
                process.set_attribute("qu.dead_letter.reason", outcome.reason)
        if record.timestamp is not None:
            self.metrics.latency.record(max(0.0, self.clock() - record.timestamp))

    def _end_spans(self, error: BaseException | None) -> None:
        """End every record's ``process`` span (and ``send`` spans still open, when delivery failed)."""
        for sent in self._sent:
            for span in sent.spans:
                _fail_span(span, error)
                span.end()
        for record in self.records:
            process = recording_span(record.context)
            if process is not None:
                if error is not None:
                    _fail_span(process, error)
                process.end()

    async def _queue(self, sent: _Sent) -> None:
        try:
            sent.futures = [
                await self.producer.send(*record) for record in self._traced(sent, self._encode(sent.outcome))
            ]
        except Exception as exc:
            await self._refused(sent, exc)

    def _traced(self, sent: _Sent, records: list[OutgoingRecord]) -> list[OutgoingRecord]:
        """The outgoing records with the trace context in their headers: a `send` span each when the event is
        sampled; the event's own (unsampled) context when it came with one, so consumers keep its trace id."""
        context = self.records[sent.index].context
        if context is None:
            return records
        for span in sent.spans:  # a dead letter replacing a refused outcome: the refused sends are over
            _fail_span(span, None)
            span.end()
        sent.spans = []
        sampled = recording_span(context) is not None
        for topic, _key, _value, headers in records:
            if sampled:
                span = send_span(self.tracer, context, topic)
                sent.spans.append(span)
                inject_context(headers, trace.set_span_in_context(span))
            else:
                inject_context(headers, context)
        return records

    async def _refused(self, sent: _Sent, exc: Exception) -> None:
        record = self.records[sent.index]
        if sent.substituted or not self.is_rejection(exc):
            raise UndeliveredOutcome(record, exc) from exc
        # The broker will never take this outcome: the record becomes a dead letter, which is bounded to fit.
        what = "annotation" if sent.outcome.annotation is not None else "dead letter"
        error = InvalidEvent("output_rejected", clip_text(f"the {what} was refused: {type(exc).__name__}: {exc}", 512))
        origin = record.origin
        log.warning("%s[%d]@%d: %s", origin.topic, origin.partition, origin.offset, error)
        self.on_rejected(error.reason)
        letter = encode_dead_letter(record.value, record.key, record.headers, error, origin)
        sent.outcome = Outcome(dead_letter=letter, key=record.key or b"", reason=error.reason)
        sent.substituted = True
        await self._queue(sent)

    def _encode(self, outcome: Outcome) -> list[OutgoingRecord]:
        # Every record gets its own headers list: the trace context is appended to it.
        if outcome.annotation is not None:
            value, content_type = encode_annotation(outcome.annotation, self.annotation_format)
            records: list[OutgoingRecord] = [
                (QUERY_ANNOTATIONS, outcome.key, value, [("content-type", content_type.encode())])
            ]
            if outcome.cache_miss is not None:
                miss, miss_type = encode_cache_miss(outcome.cache_miss, self.annotation_format)
                records.append((CACHE_MISSES, outcome.key, miss, [("content-type", miss_type.encode())]))
            return records
        if outcome.dead_letter is not None:
            headers = [("content-type", PROTOBUF.encode()), ("reason", outcome.reason.encode())]
            return [(DEAD_LETTER, outcome.key or None, outcome.dead_letter, headers)]
        return []


def _fail_span(span: Span, error: BaseException | None) -> None:
    what = (
        f"{type(error).__name__}: {error}"[:300] if error is not None else "the outcome was replaced by a dead letter"
    )
    span.set_status(Status(StatusCode.ERROR, what))
