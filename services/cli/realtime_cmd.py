"""``qu annotate`` (queries through the real-time handler) and ``qu refresher`` (the head-tag refresher)."""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from typing import Annotated

import orjson
import typer

from services.annotation.runtime import build_runtime
from services.cache import HeadTagAdmission, HeadTagRefresher, connect_head_tag_cache
from services.cache.refresher import CONSUMER_CHECK
from services.cache.refresher_metrics import watch_refresher
from services.catalog.artifacts import load_catalog
from services.cli.context import err_console, reported_errors, settings_from
from services.consumer_lag import GroupLagReader, watch_group_lag
from services.domain import Annotation
from services.health import Health, heartbeat
from services.kafka_security import KafkaSecurity
from services.settings import Settings
from services.telemetry.logs import configure_logging
from services.telemetry.setup import configure_telemetry
from services.topics import SEARCH_EVENTS, WORKER_GROUP
from services.wire import RecordOrigin

REFRESHER_GROUP = "qu-head-tag-refresher"


def annotate(
    ctx: typer.Context,
    queries: Annotated[list[str], typer.Argument(help="Queries, as a shopper types them.")],
    json: Annotated[bool, typer.Option("--json", help="One JSON annotation per line.")] = False,
) -> None:
    """Annotate QUERIES through the same handler as the stream, against the running stack."""
    settings = settings_from(ctx)
    with reported_errors():
        annotations = asyncio.run(_annotate(settings, queries))
    for annotation in annotations:
        if json:
            typer.echo(orjson.dumps(annotation.to_json()).decode())
        else:
            _print(annotation)


async def _annotate(settings: Settings, queries: list[str]) -> list[Annotation]:
    runtime = await build_runtime(settings)
    await runtime.warm_up()
    try:
        results = []
        for i, query in enumerate(queries):
            value = orjson.dumps({"event_id": f"cli-{uuid.uuid4()}", "query": query})
            outcome = await runtime.handler.handle(value, None, None, RecordOrigin(WORKER_GROUP, 0, i))
            if outcome.annotation is None:
                err_console.print(f"[red]rejected[/] {query!r}: {outcome.reason}")
                continue
            results.append(outcome.annotation)
        return results
    finally:
        await runtime.close()


def _print(a: Annotation) -> None:
    u = a.understanding
    tags = ", ".join(f"{t.role.value}:{t.text!r}={t.canonical}" for t in u.tags) or "(no tags)"
    categories = "; ".join(f"{' > '.join(c.path)} ({c.score:.2f})" for c in u.categories) or "(no category)"
    flag = " [yellow]degraded[/]" if a.degraded else ""
    err_console.print(f"[bold]{a.query}[/] -> {tags} | {categories} | {a.source.value} {a.model_version}{flag}")
    for d in a.guardrails:
        err_console.print(f"    dropped {d.item}: {d.reason}")


def refresher(ctx: typer.Context) -> None:
    """Run the head-tag refresher: qu.head-tags.v1 -> Redis, until SIGTERM or Ctrl-C."""
    settings = settings_from(ctx)
    configure_logging("INFO", json=settings.log_format == "json")
    # Its probes, /livez and /readyz, beside /metrics: ready once the consumer has started.
    health = Health((CONSUMER_CHECK,), stall_s=settings.health_stall_s)
    with reported_errors():
        # An entrypoint: it configures telemetry (its Prometheus endpoint is QU_METRICS_PORT).
        # Its spans are run activations, a few a day: every one is kept (QU_TRACE_SAMPLE_RATIO is for search events).
        telemetry = configure_telemetry(
            settings.model_copy(update={"trace_sample_ratio": 1.0}), "qu-refresher", health=health
        )
        try:
            asyncio.run(_refresh(settings, health))
        finally:
            telemetry.shutdown()


async def _refresh(settings: Settings, health: Health) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        health.stopping(f"the refresher is stopping ({sig.name})")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    # Not the real-time path: long pipelines, so a patient socket timeout instead of the lookups' 0.25 s.
    redis = connect_head_tag_cache(
        settings.redis_url, password=settings.resolved_redis_password(), socket_timeout_s=5.0, connect_timeout_s=2.0
    )
    # The catalog the workers answer from: nothing outside it may reach the cache (see services.cache.admission).
    admission = HeadTagAdmission(load_catalog(settings.resolved_catalog_dir))
    security = KafkaSecurity.from_settings(settings)
    worker = HeadTagRefresher(
        {"bootstrap.servers": settings.kafka_bootstrap, "group.id": REFRESHER_GROUP},
        redis,
        admission=admission,
        security=security,
        ttl_s=settings.head_tags_ttl_s,
        health=health,
    )
    watch_refresher(worker.counters)
    # The workers' lag, watched from outside their group: a worker that is down cannot report its own.
    lag = GroupLagReader(settings.kafka_bootstrap, WORKER_GROUP, SEARCH_EVENTS, security=security)
    watch_group_lag(lag)
    logging.getLogger("qu.refresher").info(
        "refreshing Redis %s from %s (%s)", settings.redis_url, settings.kafka_bootstrap, security.describe()
    )
    # From the event loop, so that a blocked loop fails liveness (the probe is served from another thread).
    beating = asyncio.create_task(heartbeat(health))
    try:
        await worker.run_forever(stop)
    finally:
        beating.cancel()
        worker.close()
        lag.close()
        await redis.aclose()
