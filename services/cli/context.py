"""What every command shares: the settings object, error reporting and output helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import typer
from rich.console import Console

from services.errors import QuError
from services.settings import Settings

# Reports go to stderr so that stdout carries only data (JSON, JSON lines) for pipes.
# soft_wrap: an error naming a long path stays one line, greppable, whatever the terminal width.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def settings_from(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):
        raise RuntimeError("the qu entrypoint did not build the settings")
    return settings


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn the engine's own errors into one clear line on stderr and exit status 1."""
    try:
        yield
    except QuError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from err
    except FileNotFoundError as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from err
