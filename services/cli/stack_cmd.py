"""``qu up`` / ``qu status`` / ``qu down``: the embedded stack on this machine."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.stack.embedded import AlreadyRunning, EmbeddedStack
from services.stack.figures import summary_lines


def up(ctx: typer.Context) -> None:
    """Start the broker, Redis, Triton, the head-tag refresher and the Faust worker(s), in the background."""
    stack = EmbeddedStack(settings_from(ctx), report=lambda message: err_console.print(message))
    with reported_errors():
        try:
            state = stack.up()
        except AlreadyRunning as running:
            err_console.print(f"{running}; nothing to do (`qu down` stops it)")
            return
    err_console.print(
        "[green]up[/]: " + ", ".join(f"{k}={v}" for k, v in state.endpoints.items() if not k.startswith("triton_shm"))
    )


def status(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Endpoints of the embedded stack, which of its processes are up, and the last minute: events, hit ratio,
    fallbacks, dead letters, and the workers' lag."""
    with reported_errors():
        report = EmbeddedStack(settings_from(ctx)).status(figures=True)
    if json:
        print_json(report)
        return
    if not report["processes"]:
        typer.echo("not running")
        return
    for key, value in dict(report["endpoints"]).items():  # type: ignore[call-overload]
        typer.echo(f"{key:>18}: {value}")
    for process in report["processes"]:  # type: ignore[attr-defined]
        line = f"{process['name']:>18}: pid {process['pid']} {'up' if process['alive'] else 'DOWN'}"
        if "restarts" in process:  # a worker, run by its keeper: how often it had to be started again
            line += f", {process['restarts']} restart(s)" + (
                f", child pid {process['child_pid']}" if process["child_pid"] else ", restarting"
            )
        typer.echo(line)
    if "figures" in report:
        for line in summary_lines(report["figures"]):  # type: ignore[arg-type]
            typer.echo(f"{'':>18}  {line}")


def down(ctx: typer.Context) -> None:
    """Stop exactly the processes `qu up` started, and remove what they left behind."""
    with reported_errors():
        stopped = EmbeddedStack(settings_from(ctx)).down()
    err_console.print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
