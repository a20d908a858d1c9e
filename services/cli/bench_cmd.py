"""``qu bench``: the real-time path's throughput and latency on the embedded stack (docs/BENCHMARKS.md)."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from services.bench.runner import BenchConfig, run_bench
from services.bench.soak import SoakConfig, run_soak
from services.cli.context import err_console, reported_errors, settings_from
from services.cli.soak_view import print_soak, soak_progress
from services.settings import Settings

DEFAULT_RATE = 1000.0  # the paced phases of `qu bench`
DEFAULT_SOAK_RATE = 200.0  # a soak's steady stream: what two shared cores sustain for 20 minutes


def bench(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1, help="Events per phase (worker and passthrough alike).")] = 20_000,
    hit_ratio: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of events the seeded head cache answers.")
    ] = 0.98,
    rate: Annotated[
        float | None,
        typer.Option(min=1, help=f"Events/s of the paced phases ({DEFAULT_RATE:g}) or a soak ({DEFAULT_SOAK_RATE:g})."),
    ] = None,
    miss_rate: Annotated[float, typer.Option(min=1, help="Events/s of the all-miss phase (the student).")] = 200,
    miss_events: Annotated[int, typer.Option(min=0, help="Events of the all-miss phase; 0 skips it.")] = 3000,
    warmup: Annotated[int | None, typer.Option(min=0, help="Warm-up events (discarded); default events/10.")] = None,
    seed: Annotated[int, typer.Option(help="Traffic generator seed.")] = 1,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds a phase may wait for answers after its last send.")
    ] = 120,
    passthrough: Annotated[bool, typer.Option(help="Measure the raw passthrough too (needed for `ratio`).")] = True,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="After the measured phases, restart worker-0 under cProfile, run the events through it once more, "
            "and report where its main thread spent its time (by layer and the top functions).",
        ),
    ] = False,
    soak: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            metavar="MINUTES",
            help="Instead of the phases: a steady stream at --rate for MINUTES, sampling RSS of every process, "
            "the worker group's lag and latency; fails if an event goes unanswered or a process dies. "
            "Uses --hit-ratio, --seed, --timeout, --sample-every; not the other phase options.",
        ),
    ] = None,
    sample_every: Annotated[
        float, typer.Option(min=0.5, help="Seconds between a soak's samples (RSS, lag, latency).")
    ] = 15.0,
    tracing_overhead: Annotated[
        bool,
        typer.Option(
            "--tracing-overhead",
            help="Instead of the phases: the worker's CPU per event with tracing off, and sampling 0%, 1% and "
            "100%, in one process without the broker (uses --events, --hit-ratio, --seed).",
        ),
    ] = False,
    tracing_through_stack: Annotated[
        bool,
        typer.Option(
            "--tracing-through-stack",
            help="Instead of the phases: worker-0 restarted at sampling 0%, 1% and 100%, the same events unthrottled "
            "through the stack at each, interleaved over --rounds rounds; events/s and the worker's CPU per event "
            "(uses --events, --hit-ratio, --seed, --timeout).",
        ),
    ] = False,
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of --tracing-through-stack (best of each kept).")] = 2,
    faust_floor: Annotated[
        bool,
        typer.Option(
            "--faust-floor",
            help="Instead of the phases: the worker's Faust agent with no handler copying --events records on a "
            "fresh broker of its own, per Faust transport (aiokafka, confluent-kafka): Faust's share of the "
            "worker's CPU per event (uses --events, --timeout).",
        ),
    ] = False,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON line with every figure.")] = False,
) -> None:
    """Benchmark the real-time path: unthrottled throughput, paced end-to-end latency, the miss path,
    and a raw Kafka passthrough measured the same way; or, with --soak, a long steady stream.
    Starts the stack if it is not running."""
    settings = settings_from(ctx)
    if tracing_overhead:
        _tracing_overhead(events, hit_ratio, seed, json)
        return
    if tracing_through_stack:
        _tracing_through_stack(settings, events, hit_ratio, seed, timeout, rounds, json)
        return
    if faust_floor:
        _faust_floor(settings, events, timeout, json)
        return
    if soak is not None:
        _soak(settings, soak, rate or DEFAULT_SOAK_RATE, hit_ratio, sample_every, seed, timeout, json)
        return
    config = BenchConfig(
        events=events,
        hit_ratio=hit_ratio,
        rate=rate or DEFAULT_RATE,
        miss_rate=miss_rate,
        miss_events=miss_events,
        warmup=warmup,
        seed=seed,
        timeout_s=timeout,
        passthrough=passthrough,
        profile=profile,
    )
    with reported_errors():
        result = run_bench(settings, config, report=lambda message: err_console.print(message))
    if json:
        typer.echo(orjson.dumps(result).decode())
    else:
        _print(result)
    if not result["complete"]:
        err_console.print(f"[bold red]error:[/] {result['unanswered']} events were not answered within {timeout:g} s")
        raise typer.Exit(1)


def _print(result: dict[str, Any]) -> None:
    keys = (
        "events_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "passthrough_events_per_s",
        "passthrough_p99_ms",
        "ratio",
        "passthrough_confluent_events_per_s",
        "passthrough_confluent_p99_ms",
    )
    for key in (*keys, "hits", "misses", "fallbacks", "dead_letters", "unanswered"):
        if key in result:
            typer.echo(f"{key:>26}: {result[key]}")
    if "miss_path" in result:
        miss = result["miss_path"]
        typer.echo(f"{'miss path':>26}: {miss['target_rate']}/s p50 {miss['p50_ms']} ms, p99 {miss['p99_ms']} ms")
    cpu: dict[str, dict[str, float]] = result.get("cpu_us_per_event") or {}
    if cpu:
        names = sorted({n for figures in cpu.values() for n in figures if n != "total"})
        table = Table("CPU µs/event", *cpu, title="CPU per event of each process, by phase")
        for name in [*names, "total"]:
            table.add_row(name, *(f"{figures.get(name, 0.0):.0f}" for figures in cpu.values()))
        Console().print(table)
    profile = result.get("worker_profile")
    if profile:
        layers = Table(
            "layer", "share of the worker's own time", title=f"worker-0 profile ({profile['events']} events)"
        )
        for layer, share in profile["layers"].items():
            layers.add_row(layer, f"{share:.1%}")
        Console().print(layers)
        top = Table("function", "calls", "own s", "share", title="top functions by own time")
        for row in profile["top"]:
            top.add_row(row["function"], str(row["calls"]), f"{row['own_s']:.3f}", f"{row['own_share']:.1%}")
        Console().print(top)


def _tracing_overhead(events: int, hit_ratio: float, seed: int, json: bool) -> None:
    from services.bench.tracing_overhead import run_tracing_overhead

    with reported_errors():
        results = run_tracing_overhead(events=events, hit_ratio=hit_ratio, seed=seed)
    rows = [r.summary(results[0]) for r in results]
    if json:
        typer.echo(orjson.dumps(rows).decode())
        return
    table = Table("mode", "CPU µs/event", "events per CPU s", "vs no SDK", "spans exported", title="tracing overhead")
    for row in rows:
        table.add_row(
            str(row["mode"]),
            str(row["cpu_us_per_event"]),
            str(row["events_per_cpu_s"]),
            f"{row['cpu_vs_no_sdk']}x",
            str(row["spans_exported"]),
        )
    Console().print(table)


def _tracing_through_stack(
    settings: Settings, events: int, hit_ratio: float, seed: int, timeout: float, rounds: int, json: bool
) -> None:
    from services.bench.tracing_stack import run_tracing_through_stack

    with reported_errors():
        result = run_tracing_through_stack(
            settings,
            events=events,
            hit_ratio=hit_ratio,
            seed=seed,
            timeout_s=timeout,
            rounds=rounds,
            report=lambda message: err_console.print(message),
        )
    if json:
        typer.echo(orjson.dumps(result).decode())
    else:
        table = Table(
            "sampling",
            "events/s",
            "vs 0%",
            "worker CPU µs/event",
            "vs 0%",
            "traced",
            "complete rounds",
            title=f"tracing through the stack (best complete round of {rounds})",
        )
        for row in result["best"]:
            table.add_row(
                f"{row['ratio']:.0%}",
                _shown(row["events_per_s"], "{:,.0f}"),
                _shown(row["events_per_s_vs_0"], "{}x"),
                _shown(row["worker_cpu_us_per_event"], "{:.1f}"),
                _shown(row["worker_cpu_vs_0"], "{}x"),
                _shown(row["traced_share"], "{:.1%}"),
                str(row["complete_rounds"]),
            )
        Console().print(table)
    if not result["complete"]:
        err_console.print(
            f"[bold red]error:[/] a ratio had no round whose events were all answered within {timeout:g} s: "
            "fewer --events (the embedded broker slows as its topics grow) or a longer --timeout"
        )
        raise typer.Exit(1)


def _shown(value: float | None, form: str) -> str:
    return "—" if value is None else form.format(value)


def _faust_floor(settings: Settings, events: int, timeout: float, json: bool) -> None:
    from services.bench.faust_floor import run_faust_floor

    work_dir = settings.state_dir / "faust-floor"
    work_dir.mkdir(parents=True, exist_ok=True)
    with reported_errors():
        results = run_faust_floor(work_dir, events=events, timeout_s=timeout, report=err_console.print)
    if json:
        typer.echo(orjson.dumps([r.as_dict() for r in results]).decode())
    else:
        table = Table("transport", "copied", "events/s", "Faust CPU µs/event", "broker CPU µs/event", "note")
        for r in results:
            figures = (r.events_per_s, r.faust_cpu_us_per_event, r.broker_cpu_us_per_event)
            table.add_row(
                r.transport, f"{r.copied}/{r.events}", *("—" if f is None else f"{f:g}" for f in figures), r.note
            )
        Console().print(table)
    if any(r.events_per_s is None for r in results):
        raise typer.Exit(1)


def _soak(
    settings: Settings,
    minutes: float,
    rate: float,
    hit_ratio: float,
    sample_s: float,
    seed: int,
    timeout: float,
    json: bool,
) -> None:
    config = SoakConfig(minutes, rate, hit_ratio, sample_s, seed, timeout)
    with reported_errors(), soak_progress(err_console, config.events) as progress:
        result = run_soak(settings, config, report=lambda message: err_console.print(message), progress=progress)
    if json:
        typer.echo(orjson.dumps(result).decode())
    else:
        print_soak(result)
    if result["unanswered"]:
        shown = ", ".join(result["unanswered_ids"])
        err_console.print(f"[bold red]error:[/] {result['unanswered']} events were not answered (first: {shown})")
    for event in result["process_events"]:
        err_console.print(f"[bold red]error:[/] {event}")
    if not result["complete"]:
        raise typer.Exit(1)
