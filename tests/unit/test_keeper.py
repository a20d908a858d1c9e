"""The keeper runs a real child process: it starts it again when it dies, with backoff, and stops it on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.stack.keeper import Backoff, KeeperStatus


def test_backoff_doubles_for_quick_deaths_and_resets_after_a_stable_run() -> None:
    backoff = Backoff(first_s=1, max_s=5, stable_after_s=60)
    delays: list[float] = []
    previous: float | None = None
    for ran_s in (0.1, 0.1, 0.1, 0.1, 0.1, 120.0, 0.1):
        previous = backoff.delay(previous, ran_s)
        delays.append(previous)
    assert delays == [1, 2, 4, 5, 5, 1, 2]


def keeper(tmp_path: Path, child: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    status, log = tmp_path / "w.keeper.json", tmp_path / "w.log"
    command = [sys.executable, "-m", "services.stack.keeper", "--name", "worker-9", "--status", str(status)]
    command += [*extra, "--", sys.executable, "-c", child]
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[2])
    return process, status, log


def wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_a_child_that_dies_is_started_again_and_each_restart_is_logged(tmp_path: Path) -> None:
    # The child dies at once twice (exit 3), then stays up.
    counter = tmp_path / "runs"
    child = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(counter)!r}); n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1))\n"
        "sys.exit(3) if n < 2 else time.sleep(60)\n"
    )
    process, status_path, log = keeper(tmp_path, child, "--first-backoff", "0.1", "--max-backoff", "0.4")
    try:
        wait_for(lambda: (s := KeeperStatus.load(status_path)) is not None and s.restarts == 2 and s.child_pid)
        status = KeeperStatus.load(status_path)
        assert status is not None and [e["code"] for e in status.exits] == [3, 3]
        text = log.read_text()
        assert "qu keeper: worker-9 exited with code 3" in text
        assert "restarting in 0.1 s (restart 1)" in text and "restarting in 0.2 s (restart 2)" in text
    finally:
        process.terminate()
        assert process.wait(15) == 0  # stopped as asked


def test_a_killed_child_is_restarted_and_sigterm_to_the_keeper_stops_the_child(tmp_path: Path) -> None:
    process, status_path, log = keeper(tmp_path, "import time; time.sleep(60)", "--first-backoff", "0.1")
    try:
        wait_for(lambda: (s := KeeperStatus.load(status_path)) is not None and s.child_pid is not None)
        first = KeeperStatus.load(status_path)
        assert first is not None and first.child_pid is not None
        os.kill(first.child_pid, signal.SIGKILL)
        wait_for(lambda: (s := KeeperStatus.load(status_path)) is not None and s.restarts == 1 and s.child_pid)
        second = KeeperStatus.load(status_path)
        assert second is not None and second.child_pid not in (None, first.child_pid)
        assert "was killed by SIGKILL" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    assert "stopped as asked" in log.read_text()
    assert second.child_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second.child_pid, 0)  # the keeper passed SIGTERM on and waited for its child
    final = KeeperStatus.load(status_path)
    assert final is not None and final.restarts == 1 and final.child_pid is None
