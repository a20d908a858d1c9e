"""``qu teacher run``: teach the head queries, fill the head-tag cache, append the student's curriculum."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Annotated, Any

import typer
from opentelemetry.metrics import NoOpMeter
from opentelemetry.trace import Tracer
from tqdm import tqdm

from services.catalog.artifacts import load_catalog
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.conversions.store import ConversionHistory
from services.evaluation.hybrid_choice import choose_policy
from services.evaluation.registry import PredictorEnv
from services.evaluation.run import GoldFormat, load_gold
from services.gold.model import GoldQuery
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.teacher.context import ExamplePool
from services.teacher.context_types import TaskName
from services.teacher.curriculum import CurriculumRun
from services.teacher.hybrid import POLICY_FILE, HybridPolicy
from services.teacher.llm_client import OpenAIChatBackend
from services.teacher.metrics import METER_NAME, TeacherMetrics
from services.teacher.run import RunOptions, TeacherRun, run_fingerprint
from services.teacher.runtime import (
    BackendName,
    build_pipeline,
    fingerprint_extra,
    hybrid_policy,
    kafka_publisher,
    load_conversions,
    open_backend,
    select_queries,
    wait_for_activation,
)
from services.telemetry import TRACER_NAME
from services.telemetry.setup import configure_telemetry
from services.topics import HEAD_TAGS

app = typer.Typer(help="The offline teacher: head queries in, head tags and curriculum out.", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    log: Annotated[
        list[Path] | None,
        typer.Option(
            help="Search-event log (JSON lines with query, session_id, ts); repeat for several. "
            "Default: STATE_DIR/traffic/events.jsonl when it exists."
        ),
    ] = None,
    queries: Annotated[
        Path | None, typer.Option(help="Teach exactly these queries (one per line, or JSON lines with query).")
    ] = None,
    top: Annotated[int | None, typer.Option(min=1, help="Head size: most frequent queries of the log.")] = None,
    misses: Annotated[
        bool, typer.Option(help="Also promote tail queries that keep missing the cache (qu.cache-misses.v1).")
    ] = True,
    min_misses: Annotated[int | None, typer.Option(min=1, help="Misses that promote a tail query.")] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            help="catalog (offline, deterministic), openai (the LLM endpoint), or hybrid (both: the LLM proposes, "
            "the policy of `qu teacher choose` publishes); default QU_TEACHER_BACKEND."
        ),
    ] = None,
    task: Annotated[
        list[TaskName] | None, typer.Option(help="Tasks to run (repeat); default all. srl is always run.")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="Queries per curriculum part (the resume step).")] = 64,
    publish: Annotated[bool, typer.Option(help="Publish the head set to qu.head-tags.v1.")] = True,
    wait: Annotated[
        float, typer.Option(min=0, help="Seconds to wait for the refresher to activate the run (0: do not wait).")
    ] = 60.0,
    json: Annotated[bool, typer.Option("--json", help="Print the run's summary as JSON.")] = False,
) -> None:
    """Select queries, build their context, ask the teacher one prompt per task, guardrail, publish, record.

    Interrupt it at any time: the same command resumes where the last whole curriculum part ended,
    and a finished run is not taught again.
    """
    # Beside a running stack: its trace store and, when it runs one, its local LLM teacher.
    settings = EmbeddedStack(settings_from(ctx)).settings_for_clients()
    name = backend or settings.teacher_backend
    if name not in ("catalog", "openai", "hybrid"):
        raise typer.BadParameter(f"--backend must be catalog, openai or hybrid, not {name!r}")
    logs = log if log else _default_logs(settings)
    with reported_errors():
        # An entrypoint: the run is one trace (no Prometheus endpoint for a job; OTLP, or the stack's trace store).
        # A run is rare and worth its trace whatever QU_TRACE_SAMPLE_RATIO says (that ratio is for search events).
        traced = settings.model_copy(update={"trace_sample_ratio": 1.0})
        telemetry = configure_telemetry(
            traced, "qu-teacher", metrics_port=0, instrument_redis=False, global_providers=False
        )
        try:
            summary = asyncio.run(
                _run(
                    settings,
                    name,  # type: ignore[arg-type]
                    logs=logs,
                    queries_file=queries,
                    top=top or settings.teacher_head_size,
                    read_misses=misses and queries is None,
                    min_misses=min_misses or settings.teacher_min_misses,
                    tasks=[TaskName.SRL, *(task or list(TaskName))],
                    chunk_size=chunk_size,
                    publish=publish,
                    wait_s=wait if publish else 0.0,
                    progress=not json,
                    tracer=telemetry.tracer_provider.get_tracer(TRACER_NAME),
                    metrics=TeacherMetrics(
                        telemetry.meter_provider.get_meter(METER_NAME) if telemetry.meter_provider else NoOpMeter("")
                    ),
                )
            )
        finally:
            telemetry.shutdown()
    if json:
        print_json(summary)
        return
    err_console.print(
        f"run {summary['run_id']}: {summary['queries']} queries ({summary['resumed']} resumed), "
        f"{summary['published']} published, rejected {summary['rejected'] or 'none'}; "
        f"curriculum {summary['curriculum']['path']} ({summary['curriculum']['records']} records)"
    )


@app.command("choose")
def choose(
    ctx: typer.Context,
    labels: Annotated[
        Path, typer.Option(help="Labelled queries (qu traffic writes EVENTS.labels.jsonl beside EVENTS).")
    ],
    conversions: Annotated[
        Path | None,
        typer.Option(help="Conversion history for rewrite precision (`qu conversions build`); default STATE_DIR's."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Labelled queries to teach (an LLM takes seconds each).")] = 50,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries taught together.")] = 8,
    save: Annotated[
        bool, typer.Option(help="Save the policy where `qu teacher run --backend hybrid` reads it.")
    ] = True,
    json: Annotated[bool, typer.Option("--json", help="Print the policy and its figures as JSON.")] = False,
) -> None:
    """Choose the hybrid teacher's policy on labelled queries: both teachers answer each, every way of combining
    them is scored per task (SRL F1, category top-1, rewrite coverage at no loss of precision), the best is saved."""
    settings = EmbeddedStack(settings_from(ctx)).settings_for_clients()
    with reported_errors():
        gold = load_gold(labels, GoldFormat.QU, limit=limit)
        history_dir = conversions or settings.resolved_conversions_dir
        history = ConversionHistory.load(history_dir) if history_dir.is_dir() else None
        if history is None:
            err_console.print(f"no conversion history in {history_dir}: rewrite precision is not measured")
        policy, session = asyncio.run(_choose(settings, gold, history, labels, batch_size, progress=not json))
        path = settings.state_dir / POLICY_FILE
        if save:
            policy.save(path)
    result = {**policy.to_json(), "saved": str(path) if save else None, "llm": session}
    if json:
        print_json(result)
        return
    err_console.print(f"hybrid policy on {len(gold)} labelled queries: {policy.fingerprint()}")
    for task, figures in policy.scores.items():
        err_console.print(f"  {task}: " + "; ".join(f"{variant} {values}" for variant, values in figures.items()))
    if save:
        err_console.print(f"saved to {path}: `qu teacher run --backend hybrid` publishes by it")


async def _choose(
    settings: Settings,
    gold: list[GoldQuery],
    history: ConversionHistory | None,
    labels: Path,
    batch_size: int,
    *,
    progress: bool,
) -> tuple[HybridPolicy, dict[str, Any]]:
    env = PredictorEnv(settings)
    chosen_on = {"labels": str(labels), "endpoint": settings.teacher_base_url, "model": settings.teacher_model}
    async with OpenAIChatBackend.from_settings(settings) as llm:
        with tqdm(total=len(gold), desc="both teachers", unit="q", disable=not progress or None) as bar:
            policy = await choose_policy(
                env, llm, gold, history, chosen_on=chosen_on, batch_size=batch_size, progress=bar.update
            )
        return policy, llm.summary()


def _default_logs(settings: Settings) -> list[Path]:
    default = settings.state_dir / "traffic" / "events.jsonl"
    return [default] if default.is_file() else []


async def _run(
    settings: Settings,
    backend_name: BackendName,
    *,
    logs: list[Path],
    queries_file: Path | None,
    top: int,
    read_misses: bool,
    min_misses: int,
    tasks: list[TaskName],
    chunk_size: int,
    publish: bool,
    wait_s: float,
    progress: bool,
    tracer: Tracer,
    metrics: TeacherMetrics,
) -> dict[str, Any]:
    selected, how = select_queries(
        settings, logs=logs, queries_file=queries_file, top=top, min_misses=min_misses, read_misses=read_misses
    )
    if not selected:
        raise typer.BadParameter("nothing to teach: give --log FILE (a search-event log) or --queries FILE")
    catalog = load_catalog(settings.resolved_catalog_dir)
    conversions = load_conversions(settings)
    embedder = settings.embedder()
    async with AsyncExitStack() as stack:
        backend = await open_backend(backend_name, settings, catalog, stack)
        policy = hybrid_policy(settings) if backend_name == "hybrid" else None
        pipeline = build_pipeline(
            settings, catalog, conversions, embedder, backend, tasks, tracer=tracer, metrics=metrics, hybrid=policy
        )
        endpoint = settings.teacher_base_url if backend_name != "catalog" else None
        extra = fingerprint_extra(settings, conversions, endpoint=endpoint, policy=policy)
        run_id = run_fingerprint(selected, pipeline, extra)
        curriculum = CurriculumRun(settings.resolved_curriculum_dir, run_id)
        with tqdm(total=len(selected), desc=f"teaching {run_id}", unit="q", disable=not progress or None) as bar:

            def advance(done: int, _total: int) -> None:
                bar.update(done - bar.n)

            teacher_run = TeacherRun(
                pipeline,
                curriculum,
                ExamplePool(embedder),
                options=RunOptions(
                    chunk_size=chunk_size,
                    # An LLM answers slowly: ask as many queries together as it takes at once, save by time.
                    batch_size=settings.resolved_teacher_concurrency if backend_name != "catalog" else None,
                    save_every_s=settings.teacher_save_every_s,
                ),
                publisher=kafka_publisher(settings) if publish else None,
                on_progress=advance,
                tracer=tracer,
            )
            summary = await teacher_run.run(selected)
    summary["selection"] = how
    summary["head_tags"] = {"topic": HEAD_TAGS if publish else None, "activated": None}
    if publish and wait_s > 0:
        summary["head_tags"]["activated"] = await wait_for_activation(settings, run_id, wait_s)
    return summary
