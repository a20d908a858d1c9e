"""The ``qu`` entrypoint: builds the one settings object and hands it to every command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli import (
    bench_cmd,
    catalog_cmd,
    conversions_cmd,
    demo_cmd,
    eval_cmd,
    guardrails_cmd,
    kafka_cmd,
    realtime_cmd,
    replay_cmd,
    stack_cmd,
    student_cmd,
    teacher_cmd,
    trace_cmd,
    traffic_cmd,
    triton_cmd,
)
from services.settings import Settings

app = typer.Typer(
    name="qu",
    help="Query understanding for grocery search: catalog, traffic, teacher, student, streaming annotation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(catalog_cmd.app, name="catalog")
app.add_typer(conversions_cmd.app, name="conversions")
app.add_typer(guardrails_cmd.app, name="guardrails")
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(teacher_cmd.app, name="teacher")
app.add_typer(student_cmd.app, name="student")
app.add_typer(triton_cmd.app, name="triton")
app.command("traffic")(traffic_cmd.traffic)
app.command("produce")(kafka_cmd.produce)
app.command("consume")(kafka_cmd.consume)
app.command("up")(stack_cmd.up)
app.command("status")(stack_cmd.status)
app.command("down")(stack_cmd.down)
app.command("annotate")(realtime_cmd.annotate)
app.command("refresher")(realtime_cmd.refresher)
app.command("record")(replay_cmd.record)
app.add_typer(replay_cmd.replay_app, name="replay")
app.command("bench")(bench_cmd.bench)
app.command("demo")(demo_cmd.demo)
app.command("trace")(trace_cmd.trace)


@app.callback()
def root(
    ctx: typer.Context,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="State directory (env QU_STATE_DIR); default ./.qu.", show_default=False),
    ] = None,
) -> None:
    overrides = {"state_dir": state_dir} if state_dir is not None else {}
    ctx.obj = Settings(**overrides)  # type: ignore[arg-type]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
