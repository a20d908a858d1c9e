"""What tracing costs the worker per event: the real handler and delivery, in one process, at several sampling ratios.

The broker is left out on purpose: the embedded broker's own cost grows with the history it holds
(docs/RELIABILITY.md, the soak), so phases run one after another on one stack compare badly, and the
figure wanted is the worker's CPU per event. So this runs the worker's code — ``process_context`` per
record, :class:`AnnotateHandler` (real catalog guardrails and lexicons), :class:`BatchDelivery` with trace
headers — over batches of 256 records, with an in-memory head-tag cache (``hit_ratio`` of the queries),
a student that answers at once and a producer whose sends are delivered at once. The SDK is the real
one: a ``TracerProvider`` with the worker's parent-based sampler and a ``BatchSpanProcessor`` whose
exporter drops what it is given (export runs on the processor's thread: its CPU is counted too, since
``time.process_time`` counts every thread). Modes are interleaved and each is run ``rounds`` times; the
best round of each is reported, as the least disturbed by the rest of the machine.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import orjson
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import NoOpTracer, Tracer

from services.annotation.delivery import BatchDelivery, KafkaHeaders
from services.annotation.handler import AnnotateHandler, InputRecord
from services.annotation.metrics import AnnotateMetrics
from services.annotation.tracing import process_context
from services.catalog.artifacts import build_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.domain import Understanding
from services.guardrails import Guardrails
from services.normalize import normalize_query
from services.tagging.lexicon_tagger import LexiconTagger
from services.telemetry.sampling import worker_sampler
from services.topics import SEARCH_EVENTS, WORKER_GROUP
from services.wire import RecordOrigin

BATCH = 256  # streams.app.BATCH_MAX: a loaded worker's batch
MODES: tuple[tuple[str, float | None], ...] = (
    ("no SDK", None),
    ("SDK, 0%", 0.0),
    ("SDK, 1%", 0.01),
    ("SDK, 100%", 1.0),
)


@dataclass(frozen=True, slots=True)
class OverheadResult:
    mode: str
    ratio: float | None
    events: int
    cpu_s: float
    wall_s: float
    spans: int

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6

    def summary(self, baseline: OverheadResult) -> dict[str, object]:
        return {
            "mode": self.mode,
            "ratio": self.ratio,
            "events": self.events,
            "cpu_us_per_event": round(self.cpu_us_per_event, 1),
            "events_per_cpu_s": round(self.events / self.cpu_s),
            "cpu_vs_no_sdk": round(self.cpu_us_per_event / baseline.cpu_us_per_event, 3),
            "spans_exported": self.spans,
        }


class _Dropping(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


@dataclass(slots=True)
class _Cached:
    understanding: Understanding
    teacher_version: str


class _Cache:
    def __init__(self, entries: dict[str, _Cached]) -> None:
        self.entries = entries

    async def get_many(self, queries: Sequence[str]) -> list[_Cached | None]:
        return [self.entries.get(q) for q in queries]


class _Student:
    def __init__(self, tagger: LexiconTagger) -> None:
        self.tagger = tagger

    async def understand(self, query: str) -> Understanding:
        return Understanding(self.tagger.tag(query), version="bench-student")


class _Producer:
    async def send(self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders) -> Awaitable[object]:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def run_tracing_overhead(*, events: int, hit_ratio: float, rounds: int = 3, seed: int = 1) -> list[OverheadResult]:
    catalog = build_catalog(read_catalog(demo_files()[0]).products, embedder=None)
    tagger = LexiconTagger(catalog)
    names = sorted({normalize_query(p.name) for p in catalog.products if normalize_query(p.name)})
    rng = random.Random(seed)
    head = names[: max(1, len(names) // 2)]
    cache = _Cache({q: _Cached(Understanding(tagger.tag(q), version="bench-teacher"), "bench-teacher") for q in head})
    tail = [f"{q} {rng.randrange(10**6)}" for q in names[len(head) :]] or ["tail query"]
    queries = [rng.choice(head) if rng.random() < hit_ratio else rng.choice(tail) for _ in range(events)]
    values = [orjson.dumps({"event_id": f"e{i}", "query": q}) for i, q in enumerate(queries)]
    guardrails = Guardrails(catalog)

    best: dict[str, OverheadResult] = {}
    for _ in range(rounds):
        for mode, ratio in MODES:
            result = _run_mode(mode, ratio, values, cache, tagger, guardrails)
            if mode not in best or result.cpu_s < best[mode].cpu_s:
                best[mode] = result
    return [best[mode] for mode, _ in MODES]


def _run_mode(
    mode: str,
    ratio: float | None,
    values: list[bytes],
    cache: _Cache,
    tagger: LexiconTagger,
    guardrails: Guardrails,
) -> OverheadResult:
    exporter = _Dropping()
    provider: TracerProvider | None = None
    tracer: Tracer
    if ratio is None:
        tracer = NoOpTracer()
    else:
        provider = TracerProvider(sampler=worker_sampler(ratio))
        provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=8192, schedule_delay_millis=1000))
        tracer = provider.get_tracer("qu.bench")
    metrics = AnnotateMetrics()  # the API's no-op meter: this measures tracing alone
    handler = AnnotateHandler(
        cache=cache,
        student=_Student(tagger),
        fallback=tagger,
        guardrails=guardrails,
        max_query_chars=512,
        metrics=metrics,
        tracer=tracer,
    )
    producer = _Producer()

    async def go() -> None:
        for start in range(0, len(values), BATCH):
            chunk = values[start : start + BATCH]
            records = []
            for offset, value in enumerate(chunk, start):
                origin = RecordOrigin(SEARCH_EVENTS, 0, offset)
                context = process_context(
                    tracer, None, origin, group=WORKER_GROUP, batch_size=len(chunk), root_ratio=ratio or 0.0
                )
                records.append(InputRecord(value, None, None, origin, time.time(), context))
            delivery = BatchDelivery(
                producer,
                records,
                annotation_format="json",
                is_rejection=lambda _e: False,
                metrics=metrics,
                tracer=tracer,
            )
            await handler.handle_batch(records, delivery.on_outcome)
            await delivery.wait()

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(go())
    if provider is not None:
        provider.shutdown()  # the export of what is left is part of the cost
    return OverheadResult(
        mode, ratio, len(values), time.process_time() - cpu, time.perf_counter() - wall, exporter.spans
    )
