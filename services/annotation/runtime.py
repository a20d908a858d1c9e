"""Building the annotate handler and its adapters from the settings (for the worker and `qu annotate`)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from services.annotation.handler import AnnotateHandler, HeadTagCache, Student
from services.annotation.metrics import AnnotateMetrics
from services.cache import BatchingHeadTagLookup, HeadTagStore, connect_head_tag_cache
from services.catalog.artifacts import Catalog, load_catalog
from services.circuit_breaker import CircuitBreaker
from services.errors import ServiceUnavailable
from services.guardrails import Guardrails
from services.settings import Settings
from services.student.client import StudentClient
from services.tagging.lexicon_tagger import LexiconTagger

WARM_UP_QUERY = "milk"
# What a worker logs once its handler is built and warm: `qu up` (services/stack/embedded.py) waits for it.
HANDLER_READY = "qu: annotate handler ready"


@dataclass(slots=True)
class HandlerRuntime:
    handler: AnnotateHandler
    lookup: BatchingHeadTagLookup
    student: StudentClient

    async def warm_up(self, attempts: int = 3) -> bool:
        """Open the connections before the first event: a cold gRPC channel can cost more than the
        student's deadline and turn the first events into fallbacks. Returns whether the student answered."""
        with contextlib.suppress(ServiceUnavailable):
            await self.lookup.get(WARM_UP_QUERY)
        for _ in range(attempts):
            try:
                await self.student.understand(WARM_UP_QUERY)
                return True
            except ServiceUnavailable:
                continue
        return False

    async def close(self) -> None:
        await self.lookup.aclose()
        await self.student.close()


async def build_runtime(settings: Settings, metrics: AnnotateMetrics | None = None) -> HandlerRuntime:
    """Everything the real-time path needs; cheap to build, connections are made on first use."""
    catalog = load_catalog(settings.resolved_catalog_dir)
    metrics = metrics or AnnotateMetrics()
    cache_breaker = _breaker("the head-tag cache", settings)  # the store names the address; the URL may hold a password
    student_breaker = _breaker(f"student {settings.student_model} at {settings.triton_grpc_url}", settings)
    metrics.watch_circuits([cache_breaker, student_breaker])
    store = HeadTagStore(
        connect_head_tag_cache(settings.redis_url, password=settings.resolved_redis_password()), breaker=cache_breaker
    )
    lookup = BatchingHeadTagLookup(store, settings.cache_batch_window_ms, settings.student_max_batch)
    student = StudentClient(
        settings.triton_grpc_url,
        settings.student_model,
        deadline_ms=settings.student_deadline_ms,
        batch_window_ms=settings.student_batch_window_ms,
        max_batch=settings.student_max_batch,
        breaker=student_breaker,
    )
    handler = handler_for(settings, catalog, cache=lookup, student=student, metrics=metrics)
    return HandlerRuntime(handler, lookup, student)


def handler_for(
    settings: Settings,
    catalog: Catalog,
    *,
    cache: HeadTagCache,
    student: Student,
    metrics: AnnotateMetrics | None = None,
) -> AnnotateHandler:
    """The handler as every process builds it around its own cache and student (the worker, `qu replay`):
    the catalog's lexicon fallback and guardrails, the settings' thresholds and limits."""
    return AnnotateHandler(
        cache=cache,
        student=student,
        fallback=LexiconTagger(catalog).warm(),
        guardrails=Guardrails.from_settings(catalog, settings),
        max_query_chars=settings.max_query_chars,
        max_event_bytes=settings.max_event_bytes,
        metrics=metrics,
    )


def _breaker(name: str, settings: Settings) -> CircuitBreaker:
    return CircuitBreaker(
        name,
        failure_threshold=settings.breaker_failures,
        open_s=settings.breaker_open_s,
        setting_hint=" (QU_BREAKER_FAILURES, QU_BREAKER_OPEN_S)",
    )


async def build_handler(settings: Settings, metrics: AnnotateMetrics | None = None) -> AnnotateHandler:
    """The handler with its connections opened (see :meth:`HandlerRuntime.warm_up`)."""
    runtime = await build_runtime(settings, metrics)
    await runtime.warm_up()
    return runtime.handler
