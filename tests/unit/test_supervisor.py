"""Process records signal only what the stack started: real processes, some of them strangers to the stack."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.stack.supervisor import ProcessRecord

# A leader that starts a member of its own process group which ignores SIGTERM, as Triton's
# Python-backend stubs outlive the server; it prints the member's PID.
LEADER = (
    "import signal, subprocess, sys, time\n"
    "member = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
    "print(member.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(5)


def session_of_its_own(processes: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    """A process that leads its own session and process group (pgid == pid), as `qu up` starts services."""
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    processes.append(process)
    return process


def record_of(pid: int, started: float) -> ProcessRecord:
    return ProcessRecord("triton", pid, started, [], str(Path("triton.log")))


def test_kill_group_on_a_recycled_pid_signals_nothing(processes: list[subprocess.Popen[bytes]]) -> None:
    """The state file names a PID that now leads another process group (the PID was reused)."""
    stranger = session_of_its_own(processes, "import time; time.sleep(120)")
    # What `qu up` recorded: the same PID, started long before the process that holds it now.
    recorded = record_of(stranger.pid, psutil.Process(stranger.pid).create_time() - 3600)
    assert recorded.process() is None

    signalled = recorded.kill_group()
    time.sleep(0.2)  # a SIGKILL would have landed by now
    assert stranger.poll() is None, "a process the stack did not start was signalled"
    assert signalled is False


def test_stop_on_a_recycled_pid_signals_nothing(processes: list[subprocess.Popen[bytes]]) -> None:
    stranger = session_of_its_own(processes, "import time; time.sleep(120)")
    recorded = record_of(stranger.pid, psutil.Process(stranger.pid).create_time() - 3600)
    assert recorded.stop(timeout=1, group=True) is False
    time.sleep(0.2)
    assert stranger.poll() is None


def test_stop_with_its_group_ends_members_that_outlive_the_leader(processes: list[subprocess.Popen[bytes]]) -> None:
    leader = session_of_its_own(processes, LEADER)
    assert leader.stdout is not None
    member = psutil.Process(int(leader.stdout.readline()))
    record = ProcessRecord.of("triton", leader.pid, [], Path("triton.log"))

    assert record.stop(timeout=5, group=True) is True
    leader.wait(5)
    member.wait(5)  # psutil.TimeoutExpired if the member outlived the stop
    assert not member.is_running()


def test_kill_group_kills_the_group_of_a_recorded_leader(processes: list[subprocess.Popen[bytes]]) -> None:
    leader = session_of_its_own(processes, LEADER)
    assert leader.stdout is not None
    member = psutil.Process(int(leader.stdout.readline()))
    record = ProcessRecord.of("triton", leader.pid, [], Path("triton.log"))

    assert record.kill_group() is True
    assert leader.wait(5) == -9
    member.wait(5)
