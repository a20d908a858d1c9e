"""``qu record`` (the traffic recorder) and ``qu replay`` (recorded traffic through a candidate): docs/REPLAY.md."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import signal
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.kafka_security import KafkaSecurity
from services.replay.compare import RewriteJudge
from services.replay.recorder import TrafficRecorder
from services.settings import Settings
from services.telemetry.logs import configure_logging
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS

if TYPE_CHECKING:  # numpy and scipy load only when a replay is compared, not with every `qu` command
    from services.replay.compare import RewriteJudge

log = logging.getLogger("qu.recorder")
KAFKA_SOURCE = "kafka:"


def record(ctx: typer.Context) -> None:
    """Archive qu.search-events.v1 and qu.query-annotations.v1 as Parquet under QU_ARCHIVE_DIR (default
    STATE_DIR/archive), until SIGTERM or Ctrl-C. `qu up` starts it when QU_RECORD_TRAFFIC=true."""
    settings = settings_from(ctx)
    configure_logging("INFO", json=settings.log_format == "json")
    faulthandler.enable()  # a crash in a C extension leaves its Python stack in the log, not silence
    archive = settings.resolved_archive_dir
    with reported_errors():
        archive.mkdir(parents=True, exist_ok=True)
        security = KafkaSecurity.from_settings(settings)
        recorder = TrafficRecorder(settings.kafka_bootstrap, archive, security=security)
        log.info("recording %s (%s) into %s", settings.kafka_bootstrap, security.describe(), archive)
        asyncio.run(_record(recorder))
        counters = recorder.counters
        log.info(
            "recorder stopped: %d records in %d files (%d without an event id)",
            counters.records,
            counters.files,
            counters.without_event_id,
        )


async def _record(recorder: TrafficRecorder) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await recorder.run_forever(stop)


def _moment(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as err:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-12-06T09:00+00:00)", param_hint=option
        ) from err
    if moment.tzinfo is None:
        raise typer.BadParameter(f"{value!r} has no time zone: add one (e.g. +00:00 or Z)", param_hint=option)
    return moment


replay_app = typer.Typer(
    help="Replay archived traffic through a candidate and compare it with a baseline (docs/REPLAY.md).",
    no_args_is_help=False,
)


@replay_app.callback(invoke_without_command=True)
def replay(
    ctx: typer.Context,
    candidate: Annotated[
        str | None, typer.Option(help="What answers: e.g. onnx:3, student=lexicon,cache=RUN_ID, settings=FILE.json.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Results go to OUT/<spec>/; re-running resumes what is there.")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="The traffic archive (default QU_ARCHIVE_DIR: STATE_DIR/archive), or kafka:TOPIC: a topic with "
            "retention, copied first into OUT/source-archive (with qu.query-annotations.v1 for --baseline served).",
        ),
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Compare with this SPEC, or `served`: the annotations that were served.")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Events timestamped at or after this (ISO 8601, zone).")] = None,
    until: Annotated[str | None, typer.Option(help="Events timestamped before this (ISO 8601, with zone).")] = None,
    offsets: Annotated[
        str | None,
        typer.Option(
            help="Only these offsets of the search events' topic: PARTITION:FIRST-LAST[,...] (both included)."
        ),
    ] = None,
    gold: Annotated[
        Path | None, typer.Option(help="Also score both against these labels (events whose typed query they label).")
    ] = None,
    gold_format: Annotated[str, typer.Option("--format", help="The gold file's format: qu or queryner.")] = "qu",
    conversions: Annotated[
        Path | None,
        typer.Option(
            help="A conversion log (what `qu traffic` writes beside its events): did the bought product's category "
            "rank in the top 3, and was its brand tagged — from the traffic itself, no labels."
        ),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the summaries and the comparison as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar with rate and ETA.")] = True,
) -> None:
    """Replay archived search events through a candidate configuration (the worker's own handler, in this
    process: nothing is produced and the live cache pointer is untouched); with a baseline, compare the
    two event by event and write OUT/report.html and OUT/report.json. `qu replay report OUT` re-renders."""
    if ctx.invoked_subcommand is not None:
        return
    if candidate is None or out is None:
        raise typer.BadParameter("give --candidate SPEC and --out DIR (or `qu replay report DIR`)")
    from services.catalog.artifacts import load_catalog
    from services.evaluation.run import GoldFormat, load_gold
    from services.replay.compare import compare, load_conversions
    from services.replay.report import render_report
    from services.replay.runner import parse_offsets, window
    from services.replay.runner import replay as run_replay
    from services.replay.spec import parse_spec

    settings = settings_from(ctx)
    low, high = _moment(since, "--since"), _moment(until, "--until")
    comparison: dict[str, Any] | None = None
    with reported_errors():
        specs = [parse_spec(candidate)] + ([parse_spec(baseline, what="--baseline")] if baseline else [])
        if specs[0].served:
            raise typer.BadParameter("`served` is a baseline, not a candidate", param_hint="--candidate")
        if gold_format not in {f.value for f in GoldFormat}:
            raise typer.BadParameter(f"{gold_format!r}: use qu or queryner", param_hint="--format")
        labels = load_gold(gold, GoldFormat(gold_format)) if gold is not None else None
        bought = load_conversions(conversions, load_catalog(settings.resolved_catalog_dir)) if conversions else None
        archive, topic = _source_archive(source, settings, out, served=any(s.served for s in specs))
        try:
            ranges = parse_offsets(offsets) if offsets is not None else None
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--offsets") from err
        records = window(archive, low, high, topic=topic, offsets=ranges)
        if not records:
            raise typer.BadParameter(f"no search events in {archive} for that window", param_hint="--from")
        err_console.print(f"replaying {len(records)} events from {archive}")
        summaries = [run_replay(spec, records, out, settings, archive=archive, progress=progress) for spec in specs]
        result: dict[str, object] = {
            "events": len(records),
            "replays": [
                {
                    "label": s.label,
                    "directory": str(s.directory),
                    "events": s.events,
                    "parts_written": s.parts_written,
                    "parts_resumed": s.parts_resumed,
                    "outcomes": s.outcomes,
                    "sources": s.sources,
                }
                for s in summaries
            ],
        }
        if len(summaries) == 2:
            judge = _rewrite_judge(settings) if labels is not None else None
            comparison = compare(
                summaries[0].directory, summaries[1].directory, gold=labels, conversions=bought, judge=judge
            )
            result["comparison"] = comparison
            result["report"] = str(render_report(out, comparison, summaries[0].directory, summaries[1].directory))
    if json:
        print_json(result)
        return
    for s in summaries:
        err_console.print(f"{s.label}: {s.events} events, outcomes {s.outcomes}, sources {s.sources} -> {s.directory}")
    if comparison is not None:
        agreement = comparison["agreement"]
        err_console.print(f"agreement on {agreement['events']} events: {agreement}")
        for d in comparison["deltas"]:
            p_value = "" if d["p_value"] is None else f" p={d['p_value']:.3g}"
            err_console.print(
                f"{d['name']}: {d['candidate']:.4f} vs {d['baseline']:.4f}, delta {d['delta']:+.4f} "
                f"[{d['low']:+.4f}, {d['high']:+.4f}]{p_value}: {d['verdict']}"
            )
        err_console.print(f"report: {result['report']}")


def _rewrite_judge(settings: Settings) -> RewriteJudge:
    """Rewrite precision as `qu eval report` judges it: the catalog's search, and STATE_DIR's conversion history
    when one was built (`qu conversions build`); without it, coverage only (said on stderr)."""
    from services.catalog.artifacts import load_catalog
    from services.catalog.retrieval import CatalogRetriever
    from services.conversions import ConversionHistory
    from services.replay.compare import RewriteJudge

    history_dir = settings.resolved_conversions_dir
    history = ConversionHistory.load(history_dir) if history_dir.exists() else None
    if history is None:
        err_console.print(f"no conversion history in {history_dir}: rewrite precision is not measured, coverage is")
    return RewriteJudge(CatalogRetriever(load_catalog(settings.resolved_catalog_dir).products), history)


def _source_archive(source: str | None, settings: Settings, out: Path, *, served: bool) -> tuple[Path, str]:
    """The archive to replay and its search events' topic: the archive named, the default one, or a snapshot of
    ``kafka:TOPIC`` under ``out``."""
    if source is None:
        return settings.resolved_archive_dir, SEARCH_EVENTS
    if not source.startswith(KAFKA_SOURCE):
        return Path(source), SEARCH_EVENTS
    from services.replay.recorder import snapshot_topics

    topic = source.removeprefix(KAFKA_SOURCE)
    if not topic:
        raise typer.BadParameter("kafka: needs a topic, e.g. kafka:qu.search-events.v1", param_hint="--from")
    snapshot = out / "source-archive"
    topics = [topic, QUERY_ANNOTATIONS] if served and topic != QUERY_ANNOTATIONS else [topic]
    err_console.print(f"copying {', '.join(topics)} from {settings.kafka_bootstrap} into {snapshot}")
    security = KafkaSecurity.from_settings(settings)
    counters = asyncio.run(snapshot_topics(settings.kafka_bootstrap, snapshot, topics, security=security))
    err_console.print(f"copied {counters.records} records ({counters.without_event_id} without an event id)")
    return snapshot, topic


@replay_app.command("report")
def report(
    directory: Annotated[Path, typer.Argument(help="A replay's --out directory (it holds report.json).")],
) -> None:
    """Render DIR/report.html again from the stored figures and results."""
    from services.replay.report import REPORT_JSON, render_report

    with reported_errors():
        stored = directory / REPORT_JSON
        if not stored.is_file():
            raise typer.BadParameter(f"no {REPORT_JSON} in {directory}: run `qu replay` with a --baseline first")
        comparison = orjson.loads(stored.read_bytes())
        path = render_report(
            directory, comparison, directory / comparison["candidate"], directory / comparison["baseline"]
        )
    err_console.print(f"report: {path}")
