"""The soak's process sampler on real processes (no services): a keeper's child is sampled as the worker,
a process that dies is noticed once, and a keeper's restart is a process event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.bench.resources import ProcessMemory, StackProcesses
from services.bench.workload import BenchError
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.stack.supervisor import ProcessRecord, StackState

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
# Holds ~40 MiB more than a bare interpreter: its RSS must show it.
HOLDER = [sys.executable, "-c", "import time; block = bytearray(40 * 1024 * 1024); time.sleep(120)"]


Spawn = Callable[[list[str]], subprocess.Popen[bytes]]


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def spawned() -> Iterator[Spawn]:
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=Path(__file__).parents[2], start_new_session=True)
        processes.append(process)
        return process

    yield spawn
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def stack_of(tmp_path: Path, records: dict[str, subprocess.Popen[bytes]]) -> EmbeddedStack:
    stack = EmbeddedStack(Settings(state_dir=tmp_path / "state"))
    state = StackState({"kafka": "127.0.0.1:1"})
    state.processes = [ProcessRecord.of(name, p.pid, [], tmp_path / f"{name}.log") for name, p in records.items()]
    state.save(stack.state_dir)
    return stack


def test_each_process_is_sampled_and_one_that_dies_is_noticed_once(
    clean_env: None, tmp_path: Path, spawned: Spawn
) -> None:
    kafka, redis = spawned(SLEEPER), spawned(HOLDER)
    processes = StackProcesses(stack_of(tmp_path, {"kafka": kafka, "redis": redis}))
    first = processes.start()
    assert set(first) == {"kafka", "redis"}
    wait_for(lambda: processes.sample()["redis"] > processes.sample()["kafka"] + 30 * 1024 * 1024)

    kafka.kill()
    kafka.wait(10)
    assert set(processes.sample()) == {"redis"}
    processes.sample()
    assert processes.died == ["kafka"]
    assert processes.events == [f"kafka (pid {kafka.pid}) ended during the soak"]  # once, not per sample
    summary = processes.memory["redis"].summary()
    assert summary["gone"] is False and summary["max_mib"] > 30 and summary["max_mib"] >= summary["start_mib"]


def test_a_worker_is_its_keepers_child_and_a_restart_is_an_event(
    clean_env: None, tmp_path: Path, spawned: Spawn
) -> None:
    stack = EmbeddedStack(Settings(state_dir=tmp_path / "state"))
    status = stack.keeper_status_path("worker-0")
    status.parent.mkdir(parents=True)
    keeper_command = [sys.executable, "-m", "services.stack.keeper", "--name", "worker-0", "--status", str(status)]
    keeper = spawned([*keeper_command, "--first-backoff", "0.1", "--", *HOLDER])
    wait_for(lambda: (kept := stack.keeper_status("worker-0")) is not None and kept.child_pid)
    stack_of(tmp_path, {"worker-0": keeper})

    processes = StackProcesses(stack)
    processes.start()
    child = stack.keeper_status("worker-0")
    assert child is not None and child.child_pid is not None
    assert processes.memory["worker-0"].pid == child.child_pid != keeper.pid
    assert processes.memory["worker-0.keeper"].pid == keeper.pid
    # The child holds the memory (once it has allocated it), the keeper does not.
    wait_for(lambda: (rss := processes.sample())["worker-0"] > rss["worker-0.keeper"] + 30 * 1024 * 1024)

    os.kill(child.child_pid, signal.SIGKILL)
    wait_for(lambda: (kept := stack.keeper_status("worker-0")) is not None and kept.restarts == 1)
    processes.sample()
    assert processes.died == ["worker-0"]
    assert f"worker-0 (pid {child.child_pid}) ended during the soak" in processes.events
    assert "worker-0 was restarted by its keeper 1 time(s)" in processes.events


def test_a_stack_that_is_not_running_is_refused_by_name(clean_env: None, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no stack state under"):
        StackProcesses(EmbeddedStack(Settings(state_dir=tmp_path))).start()


def test_growth_is_end_minus_start() -> None:
    memory = ProcessMemory("worker-0", 1, 100 * 1024 * 1024, 100 * 1024 * 1024, 100 * 1024 * 1024)
    memory.observe(150 * 1024 * 1024)
    memory.observe(120 * 1024 * 1024)
    assert memory.summary() == {
        **{"pid": 1, "start_mib": 100.0, "end_mib": 120.0, "max_mib": 150.0},
        **{"growth_mib": 20.0, "growth_pct": 20.0, "gone": False},
    }
