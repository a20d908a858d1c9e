"""How ``qu bench --soak`` looks: a progress bar while it runs (stderr), tables of its figures at the end (stdout)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from services.bench.soak import SoakProgress


@contextmanager
def soak_progress(console: Console, total: int) -> Iterator[Callable[[SoakProgress], None]]:
    """A bar of events sent with the send rate and ETA, and the last sample's pending events and lag."""
    columns = (
        TextColumn("soak"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("soak", total=total, rate="", status="")

        def update(progress: SoakProgress) -> None:
            speed = bar.tasks[task].speed
            fields: dict[str, Any] = {"rate": f"{speed:.0f} ev/s" if speed else ""}
            sample = progress.last_sample
            if sample is not None:
                fields["status"] = f"pending {sample['pending']} lag {sample['lag']} p99 {sample['p99_ms']} ms"
            bar.update(task, completed=progress.sent, **fields)

        yield update


def print_soak(result: dict[str, Any]) -> None:
    console = Console(highlight=False)
    summary = Table(title=f"soak {result['soak_id']}: {result['minutes']:g} min at {result['rate']:g} events/s")
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    for key in ("events", "offered_rate", "answered", "unanswered", "duplicates", "hits", "degraded", "dead_letters"):
        summary.add_row(key, str(result[key]))
    for key in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "lag_max", "lag_end"):
        summary.add_row(key, str(result[key]))
    summary.add_row("sources", ", ".join(f"{k} {v}" for k, v in result["sources"].items()))
    summary.add_row("died", ", ".join(result["died"]) or "none")
    console.print(summary)

    memory = Table(title="resident memory (MiB)")
    for name in ("process", "pid", "start", "end", "max", "growth", "growth %"):
        memory.add_column(name, justify="left" if name == "process" else "right")
    for name, rss in result["rss"].items():
        figures = (rss["pid"], rss["start_mib"], rss["end_mib"], rss["max_mib"], rss["growth_mib"], rss["growth_pct"])
        memory.add_row(name + (" (gone)" if rss["gone"] else ""), *(str(v) for v in figures))
    console.print(memory)

    samples = Table(title="samples")
    for name in ("t (s)", "sent", "answered", "pending", "lag", "p50 ms", "p99 ms", "workers MiB"):
        samples.add_column(name, justify="right")
    for sample in result["samples"]:
        workers = sum(mib for name, mib in sample["rss_mib"].items() if name.startswith("worker-"))
        row = (sample["t_s"], sample["sent"], sample["answered"], sample["pending"], sample["lag"])
        samples.add_row(*(str(v) for v in (*row, sample["p50_ms"], sample["p99_ms"], round(workers, 1))))
    console.print(samples)
