"""Wiring the teacher from the settings: backend, context builder, guardrails, selection, publication.

Kept apart from the run itself so :class:`~services.teacher.run.TeacherRun` stays plain and testable
with any backend; the CLI calls these and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from opentelemetry.trace import Tracer

from services.cache import HeadTagStore, connect_head_tag_cache
from services.cache.publish import publish_head_tags
from services.catalog.artifacts import Catalog, load_catalog
from services.conversions.store import ConversionHistory, ConversionsNotFoundError
from services.embeddings import SentenceEmbedder
from services.guardrails import EmbeddingCache, Guardrails, GuardrailThresholds
from services.kafka_clients import producer, read_to_end
from services.kafka_security import KafkaSecurity
from services.settings import Settings
from services.teacher.backend import TeacherBackend
from services.teacher.catalog_teacher import CatalogTeacher
from services.teacher.context import ContextBuilder
from services.teacher.context_types import TaskName
from services.teacher.hybrid import POLICY_FILE, HybridPolicy
from services.teacher.llm_client import OpenAIChatBackend
from services.teacher.metrics import TeacherMetrics
from services.teacher.pipeline import TeacherPipeline
from services.teacher.run import HeadEntry, HeadTagPublisher
from services.teacher.selection import QueryLog, SelectedQuery, count_misses, promoted, read_query_list
from services.topics import CACHE_MISSES, HEAD_TAGS

log = logging.getLogger(__name__)
BackendName = Literal["catalog", "openai", "hybrid"]


def load_conversions(settings: Settings) -> ConversionHistory | None:
    try:
        return ConversionHistory.load(settings.resolved_conversions_dir)
    except ConversionsNotFoundError:
        log.warning(
            "no conversion history in %s: the teacher's context will have no converted categories or brands "
            "(build it with `qu conversions build LOG`)",
            settings.resolved_conversions_dir,
        )
        return None


async def open_backend(
    name: BackendName, settings: Settings, catalog: Catalog, stack: AsyncExitStack
) -> TeacherBackend:
    """The teacher that answers first: the LLM for ``openai`` and ``hybrid`` (whose catalog teacher
    :func:`build_pipeline` adds), else the catalog teacher."""
    if name in ("openai", "hybrid"):
        return await stack.enter_async_context(OpenAIChatBackend.from_settings(settings))
    return CatalogTeacher(catalog)


def hybrid_policy(settings: Settings) -> HybridPolicy:
    """The policy `qu teacher choose` saved under the state dir, or the catalog-only default."""
    return HybridPolicy.load(settings.state_dir / POLICY_FILE)


def build_pipeline(
    settings: Settings,
    catalog: Catalog,
    conversions: ConversionHistory | None,
    embedder: SentenceEmbedder,
    backend: TeacherBackend,
    tasks: Sequence[TaskName] = tuple(TaskName),
    tracer: Tracer | None = None,
    metrics: TeacherMetrics | None = None,
    *,
    hybrid: HybridPolicy | None = None,
) -> TeacherPipeline:
    """The pipeline around ``backend``; with ``hybrid``, the catalog teacher answers beside it and the policy
    chooses what is published (services/teacher/hybrid.py)."""
    builder = ContextBuilder(catalog, conversions, embedder, top_k=settings.teacher_context_top_k)
    embeddings = EmbeddingCache(embedder)  # one cache for both teachers' guardrails
    llm = isinstance(backend, OpenAIChatBackend)
    # An LLM's answers meet the LLM bar (QU_TEACHER_LLM_REWRITE_MIN_SIMILARITY), the catalog teacher's the usual.
    guardrails = Guardrails.from_settings(catalog, settings, embedder=embeddings, llm=llm and hybrid is None)
    llm_guardrails = Guardrails.from_settings(catalog, settings, embedder=embeddings, llm=True) if llm else None
    return TeacherPipeline(
        builder,
        backend,
        guardrails,
        tasks=tasks,
        concurrency=settings.resolved_teacher_concurrency,
        catalog_build=str(catalog.manifest.get("build", "")),
        tracer=tracer,
        metrics=metrics,
        # An LLM reads every prompt token before it answers (~115 tokens/s on 2 CPU cores): its context is
        # capped. The catalog teacher reads the context as data, all of it.
        max_context_tokens=settings.teacher_context_max_tokens if isinstance(backend, OpenAIChatBackend) else None,
        fallback=CatalogTeacher(catalog) if hybrid is not None else None,
        policy=hybrid,
        llm_guardrails=llm_guardrails if hybrid is not None else None,
    )


def select_queries(
    settings: Settings,
    *,
    logs: Sequence[Path],
    queries_file: Path | None,
    top: int,
    min_misses: int,
    read_misses: bool,
) -> tuple[list[SelectedQuery], dict[str, Any]]:
    """The queries to teach (head first, then promoted misses; or the explicit list) and how they were chosen."""
    query_log = QueryLog.read(logs) if logs else None
    if queries_file is not None:
        selected = read_query_list(queries_file, query_log)
        return selected, {"queries_file": str(queries_file), "selected": len(selected)}
    head = query_log.head(top) if query_log is not None else []
    misses_read = 0
    extra: list[SelectedQuery] = []
    if read_misses:
        records = list(
            read_to_end(settings.kafka_bootstrap, CACHE_MISSES, security=KafkaSecurity.from_settings(settings))
        )
        misses_read = len(records)
        extra = promoted(count_misses(records), min_misses, exclude={s.query for s in head}, log=query_log)
    how = {
        "logs": [str(p) for p in logs],
        "log_events": query_log.events if query_log else 0,
        "distinct_queries": len(query_log.counts) if query_log else 0,
        "top": top,
        "cache_misses_read": misses_read,
        "min_misses": min_misses,
    }
    return head + extra, how


def kafka_publisher(settings: Settings) -> HeadTagPublisher:
    def publish(run_id: str, entries: Sequence[HeadEntry]) -> int:
        client = producer(settings.kafka_bootstrap, security=KafkaSecurity.from_settings(settings))
        return publish_head_tags(client, run_id, entries, topic=HEAD_TAGS)

    return publish


async def wait_for_activation(settings: Settings, run_id: str, timeout_s: float) -> bool:
    """Wait until the refresher has made ``run_id`` the cache's active run (True), or give up after the timeout."""
    client = connect_head_tag_cache(settings.redis_url, password=settings.resolved_redis_password())
    store = HeadTagStore(client)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if await store.active_run() == run_id:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


def fingerprint_extra(
    settings: Settings,
    conversions: ConversionHistory | None,
    *,
    endpoint: str | None = None,
    policy: HybridPolicy | None = None,
) -> dict[str, Any]:
    """What besides the queries, teacher, templates and catalog shapes a run's answers; ``endpoint``: the LLM
    server answering (the same model name on another server is another teacher); ``policy``: a hybrid run's."""
    return {
        **({"hybrid_policy": policy.fingerprint()} if policy is not None else {}),
        "endpoint": endpoint,
        "context_max_tokens": settings.teacher_context_max_tokens if endpoint is not None else None,
        "conversions": asdict(conversions.manifest) if conversions is not None else None,
        "guardrails": asdict(GuardrailThresholds.from_settings(settings)),
        **({"llm_guardrails": asdict(GuardrailThresholds.from_settings(settings, llm=True))} if endpoint else {}),
        "context_top_k": settings.teacher_context_top_k,
    }


__all__ = [
    "BackendName",
    "build_pipeline",
    "fingerprint_extra",
    "kafka_publisher",
    "load_catalog",
    "load_conversions",
    "open_backend",
    "select_queries",
    "wait_for_activation",
]
