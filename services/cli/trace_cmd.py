"""``qu trace EVENT_ID`` (one search event's trace as a waterfall) and ``qu trace --slowest N``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from services.cli.context import err_console, print_json, settings_from
from services.stack.embedded import EmbeddedStack
from services.telemetry.span_store import read_spans
from services.telemetry.waterfall import Row, TraceNotFound, event_trace, key_attributes, slowest

BAR_WIDTH = 30
# Rich lays a table out in 80 columns when the output is not a terminal (a pipe, a CI log): too narrow here.
WIDTH_OFF_TERMINAL = 180


def _console() -> Console:
    console = Console()
    return console if console.is_terminal else Console(width=WIDTH_OFF_TERMINAL)


def trace(
    ctx: typer.Context,
    event_id: Annotated[str | None, typer.Argument(help="The search event's event_id.")] = None,
    slowest_n: Annotated[
        int | None, typer.Option("--slowest", min=1, help="List the N slowest search-event traces instead.")
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show what the embedded stack's trace store kept: one event's spans across the worker, Redis and Triton."""
    if (event_id is None) == (slowest_n is None):
        raise typer.BadParameter("give an EVENT_ID or --slowest N (one of them)")
    stack = EmbeddedStack(settings_from(ctx))
    if not stack.keeps_traces:
        err_console.print(
            "spans go to the collector at OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "
            "look them up there (`qu trace` reads the embedded stack's own trace store)"
        )
        raise typer.Exit(2)
    spans = read_spans(stack.traces_dir)
    if slowest_n is not None:
        traces = slowest(spans, slowest_n)
        if json:
            print_json([asdict(t) for t in traces])
            return
        table = Table("trace", "event_id", "ms", "source", "degraded", "spans")
        for t in traces:
            table.add_row(t.trace_id, t.event_id, f"{t.duration_ms:.1f}", t.source, str(t.degraded), str(t.spans))
        _console().print(table)
        return
    assert event_id is not None
    try:
        rows = event_trace(spans, event_id)
    except TraceNotFound as err:
        err_console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    if json:
        print_json([_row(r) for r in rows])
        return
    _console().print(_waterfall(rows))


def _waterfall(rows: list[Row]) -> Table:
    total = max((r.offset_ms + r.span.duration_ms for r in rows), default=0.0) or 1.0
    table = Table(title=f"trace {rows[0].span.trace_id}", title_justify="left")
    for column in ("span", "service", "start ms", "ms", "", "attributes"):
        table.add_column(column, no_wrap=column != "attributes", justify="right" if "ms" in column else "left")
    for r in rows:
        start = int(r.offset_ms / total * BAR_WIDTH)
        width = max(1, int(r.span.duration_ms / total * BAR_WIDTH))
        bar = Text(" " * start + "█" * width, style="red" if r.span.status == "ERROR" else "cyan")
        name = "  " * r.depth + ("↪ " if r.linked else "") + r.span.name
        table.add_row(name, r.service, f"{r.offset_ms:.1f}", f"{r.span.duration_ms:.1f}", bar, key_attributes(r.span))
    return table


def _row(r: Row) -> dict[str, object]:
    s = r.span
    return {
        "depth": r.depth,
        "name": s.name,
        "service": r.service,
        "kind": s.kind,
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "start_offset_ms": round(r.offset_ms, 3),
        "duration_ms": round(s.duration_ms, 3),
        "linked": r.linked,
        "status": s.status,
        "attributes": s.attributes,
        "events": s.events,
    }
