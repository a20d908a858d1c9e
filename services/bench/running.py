"""The stack a measurement runs on: the running one, or one started for it and stopped again after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from services.settings import Settings
from services.stack.embedded import EmbeddedStack


@contextmanager
def running_stack(settings: Settings, report: Callable[[str], None], what: str) -> Iterator[tuple[EmbeddedStack, bool]]:
    """``(stack, started)``: the stack of ``settings``, started (and stopped when the block ends) if it was not
    running; ``what`` names the measurement in the two messages."""
    stack = EmbeddedStack(settings, report)
    started = False
    if not stack.status()["running"]:
        report(f"the stack is not running: starting it (stopped again at the end of the {what})")
        stack.up()  # stops what it started if it fails half way
        started = True
    try:
        yield stack, started
    finally:
        if started:
            report(f"stopping the stack this {what} started")
            stack.down()
