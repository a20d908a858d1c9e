"""Spans and metrics of the annotate path, with the SDK's in-memory exporter and reader.

The handler and the delivery run with in-memory fakes for Redis, the student and the producer (the
same as tests/unit/test_annotate_handler.py); the worker's real spans across the broker are tested in
tests/e2e/test_telemetry.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.annotation.delivery import BatchDelivery, KafkaHeaders
from services.annotation.handler import AnnotateHandler, InputRecord
from services.annotation.metrics import AnnotateMetrics
from services.annotation.tracing import process_context
from services.catalog.artifacts import build_catalog
from services.catalog.model import Product
from services.domain import Role, Tag, Understanding
from services.errors import ServiceUnavailable
from services.guardrails import Guardrails
from services.telemetry.kafka_headers import extract_context, inject_context
from services.telemetry.sampling import worker_sampler
from services.topics import CACHE_MISSES, QUERY_ANNOTATIONS, SEARCH_EVENTS
from services.wire import RecordOrigin

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00".encode()


@dataclass
class Cached:
    understanding: Understanding
    teacher_version: str


class Cache:
    def __init__(self, entries: dict[str, Cached], *, down: bool = False) -> None:
        self.entries, self.down = entries, down

    async def get_many(self, queries: Sequence[str]) -> list[Cached | None]:
        if self.down:
            raise ServiceUnavailable("redis down")
        return [self.entries.get(q) for q in queries]


class Student:
    def __init__(self, *, down: bool = False) -> None:
        self.down = down

    async def understand(self, query: str) -> Understanding:
        if self.down:
            raise ServiceUnavailable("triton down")
        # A brand the catalog does not know: the guardrails drop it, and the span says so.
        return Understanding([Tag(Role.BRAND, 0, 4, "milk", "Nobody's Dairy", 0.9)], version="student-v1")


class NoFallback:
    def tag(self, normalized: str) -> list[Tag]:
        return []


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, KafkaHeaders]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders) -> Awaitable[object]:
        self.sent.append((topic, headers))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def telemetry() -> tuple[trace.Tracer, InMemorySpanExporter, AnnotateMetrics, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    # Nothing sampled by ratio: only events whose traceparent says sampled are traced.
    provider = TracerProvider(sampler=worker_sampler(0.0))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    return provider.get_tracer("test"), exporter, AnnotateMetrics(meters.get_meter("test")), reader


def _record(offset: int, query: str, headers: list[tuple[str, bytes]], tracer: trace.Tracer) -> InputRecord:
    origin = RecordOrigin(SEARCH_EVENTS, 3, offset)
    value = orjson.dumps({"event_id": f"e{offset}", "query": query})
    context = process_context(tracer, headers, origin, group="qu-annotate", batch_size=3, root_ratio=0.0)
    return InputRecord(value, query.encode(), headers, origin, timestamp=1_000.0, context=context)


def _run(
    tracer: trace.Tracer, metrics: AnnotateMetrics, records: list[InputRecord], *, redis_down: bool = False
) -> Producer:
    products = [Product("1", "Organic Whole Milk", "Horizon Organic", ("dairy eggs", "milk"))]
    cache = Cache({"milk": Cached(Understanding(version="t"), "teacher-1")}, down=redis_down)
    handler = AnnotateHandler(
        cache=cache,
        student=Student(),
        fallback=NoFallback(),
        guardrails=Guardrails(build_catalog(products, embedder=None)),
        max_query_chars=512,
        metrics=metrics,
        tracer=tracer,
    )
    producer = Producer()
    delivery = BatchDelivery(
        producer,
        records,
        annotation_format="json",
        is_rejection=lambda _e: False,
        metrics=metrics,
        tracer=tracer,
        clock=lambda: 1_000.25,
    )

    async def go() -> None:
        await handler.handle_batch(records, delivery.on_outcome)
        await delivery.wait()

    asyncio.run(go())
    return producer


def _by_name(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_a_sampled_event_is_one_trace_from_its_traceparent_to_its_annotations_headers(telemetry) -> None:  # type: ignore[no-untyped-def]
    tracer, exporter, metrics, _ = telemetry
    records = [
        _record(0, "oat milk", [("traceparent", SAMPLED)], tracer),  # a miss: the student answers
        _record(1, "milk", [("traceparent", SAMPLED)], tracer),  # a hit
        _record(2, "oat milk", [], tracer),  # neither sampled nor in a trace: nothing is spent on it
    ]
    assert records[2].context is None
    producer = _run(tracer, metrics, records)
    spans = exporter.get_finished_spans()
    assert {s.context.trace_id for s in spans} == {int(TRACE_ID, 16)}

    process = _by_name(spans, f"process {SEARCH_EVENTS}")
    assert len(process) == 2 and all(s.kind is SpanKind.CONSUMER for s in process)
    miss, hit = sorted(process, key=lambda s: s.attributes["messaging.kafka.offset"])  # type: ignore[index]
    assert miss.parent is not None and miss.parent.span_id == 0x00F067AA0BA902B7  # the producer's span
    assert (
        dict(miss.attributes or {}).items()
        >= {
            "messaging.system": "kafka",
            "messaging.destination.name": SEARCH_EVENTS,
            "messaging.destination.partition.id": "3",
            "messaging.kafka.offset": 0,
            "messaging.consumer.group.name": "qu-annotate",
            "messaging.batch.message_count": 3,
            "qu.source": "student",
            "qu.degraded": False,
            "qu.guardrails.dropped": 1,
        }.items()
    )
    assert hit.attributes["qu.source"] == "cache"  # type: ignore[index]
    [dropped] = miss.events
    assert dropped.name == "guardrail dropped" and "Nobody's Dairy" in str(dropped.attributes)

    # One lookup for the batch: the first sampled record's span is its real parent, the other's a linked twin.
    lookups = _by_name(spans, "head-tag lookup")
    assert sorted(s.parent.span_id for s in lookups) == sorted(p.context.span_id for p in process)  # type: ignore[union-attr]
    real, twin = sorted(lookups, key=lambda s: len(s.links))
    assert twin.links[0].context.span_id == real.context.span_id and twin.start_time == real.start_time
    assert real.attributes["qu.queries"] == 2 and real.attributes["qu.hits"] == 1  # type: ignore[index]
    [student] = _by_name(spans, "student")
    assert student.parent.span_id == miss.context.span_id  # type: ignore[union-attr]

    # A send span per outgoing record; its context is what the record carries on.
    sends = {s.context.span_id: s for s in spans if s.kind is SpanKind.PRODUCER}
    assert sorted(s.name for s in sends.values()) == sorted(
        [f"send {QUERY_ANNOTATIONS}", f"send {CACHE_MISSES}", f"send {QUERY_ANNOTATIONS}"]
    )
    traced = [(topic, headers) for topic, headers in producer.sent if dict(headers).get("traceparent")]
    assert len(traced) == 3  # the untraced record's annotation and cache miss carry no context
    for _topic, headers in traced:
        carried = trace.get_current_span(extract_context(headers)).get_span_context()
        assert carried.trace_id == int(TRACE_ID, 16) and carried.span_id in sends


def test_an_unsampled_parent_is_carried_on_but_nothing_is_recorded(telemetry) -> None:  # type: ignore[no-untyped-def]
    tracer, exporter, metrics, _ = telemetry
    producer = _run(tracer, metrics, [_record(0, "milk", [("traceparent", UNSAMPLED)], tracer)])
    assert exporter.get_finished_spans() == ()
    [(_topic, headers)] = producer.sent
    carried = trace.get_current_span(extract_context(headers)).get_span_context()
    assert carried.trace_id == int(TRACE_ID, 16) and not carried.trace_flags.sampled


def test_the_metrics_count_what_was_delivered(telemetry) -> None:  # type: ignore[no-untyped-def]
    tracer, _, metrics, reader = telemetry
    _run(tracer, metrics, [_record(i, q, [], tracer) for i, q in enumerate(["milk", "oat milk", "milk"])])
    _run(tracer, metrics, [_record(9, "milk", [], tracer)], redis_down=True)
    points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points[(metric.name, tuple(sorted(dict(point.attributes or {}).items())))] = point
    assert points[("qu.worker.events", ())].value == 4
    assert points[("qu.worker.annotations", (("qu.degraded", False), ("qu.source", "cache")))].value == 2
    assert points[("qu.worker.annotations", (("qu.degraded", False), ("qu.source", "student")))].value == 2
    assert points[("qu.worker.cache.lookups", (("qu.cache.result", "hit"),))].value == 2
    assert points[("qu.worker.cache.lookups", (("qu.cache.result", "miss"),))].value == 1
    assert points[("qu.worker.cache.lookups", (("qu.cache.result", "unavailable"),))].value == 1
    latency = points[("qu.worker.latency", ())]
    assert latency.count == 4 and latency.sum == pytest.approx(1.0)  # 250 ms each, from the record timestamp
    assert points[("qu.worker.student.duration", (("qu.student.result", "answered"),))].count == 2
    assert points[("qu.worker.batch.size", ())].sum == 4


def test_trace_headers_survive_odd_carriers() -> None:
    assert extract_context(None) is None and extract_context([("content-type", b"x")]) is None
    assert extract_context({"traceparent": SAMPLED.decode()}) is not None  # a mapping, str values
    bad = extract_context([("traceparent", b"\xff\xfe"), ("traceparent", b"not a traceparent")])
    assert bad is not None and not trace.get_current_span(bad).get_span_context().is_valid  # ignored, no error
    headers = inject_context([], extract_context([("traceparent", SAMPLED)]))
    assert headers == [("traceparent", SAMPLED)]


def test_the_tracing_overhead_bench_runs_the_worker_path_in_every_mode() -> None:
    from services.bench.tracing_overhead import MODES, run_tracing_overhead

    results = run_tracing_overhead(events=300, hit_ratio=1.0, rounds=1)
    assert [r.mode for r in results] == [mode for mode, _ in MODES]
    spans = {r.mode: r.spans for r in results}
    # Every event a hit: its process span, its share of the batch's lookup, its annotation's send span.
    assert spans["no SDK"] == spans["SDK, 0%"] == 0 and spans["SDK, 100%"] == 3 * 300
    assert all(r.events == 300 and r.cpu_s > 0 for r in results)


def test_a_record_without_context_is_kept_at_the_root_ratio_decided_before_any_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=worker_sampler(0.0))  # other roots: never
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    origin = RecordOrigin(SEARCH_EVENTS, 1, 7)
    assert process_context(tracer, None, origin, group="g", batch_size=1, root_ratio=0.0) is None
    kept = process_context(tracer, None, origin, group="g", batch_size=1, root_ratio=1.0)
    span = trace.get_current_span(kept)
    assert span.is_recording() and span.get_span_context().trace_flags.sampled
    span.end()  # type: ignore[attr-defined]
    [finished] = exporter.get_finished_spans()
    assert finished.parent is None and finished.attributes is not None
    assert "qu.sampling.presampled" not in finished.attributes  # the marker is the sampler's, not the span's
    assert finished.attributes["messaging.kafka.offset"] == 7
    # Any other root (a Redis call outside a record) is still the ratio's: none at 0.
    assert not tracer.start_span("MGET").is_recording()
    # About the ratio asked for, over many records.
    kept_n = sum(
        process_context(tracer, None, origin, group="g", batch_size=1, root_ratio=0.1) is not None for _ in range(5000)
    )
    assert 380 < kept_n < 620
