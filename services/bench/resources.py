"""What a soak watches besides answers: the memory of every process of the stack, and the worker group's lag.

Processes come from the stack's state file. A worker's recorded PID is its keeper's
(services/stack/keeper.py); the worker itself is the keeper's child, named in the keeper's status
file, and that child is what grows if anything leaks, so both are sampled. Triton's Python-backend
stubs are children of the server and hold the student model: each is sampled under ``triton/<model>``.

Lag is measured against the records the soak itself delivered: tansu reports a high watermark
behind the last record (NOTES.md), so "end offset - committed offset" from the broker would read
too low. The end of each partition is the offset after the last record the soak's producer had
acknowledged; the committed offsets are the worker group's, read by services/consumer_lag.py's reader
(a consumer that never subscribes, so it never joins the group or takes its partitions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from services.bench.workload import BenchError
from services.consumer_lag import GroupLagReader, LagUnavailable
from services.stack.embedded import EmbeddedStack
from services.topics import WORKER_GROUP

MIB = 1024 * 1024


@dataclass(slots=True)
class ProcessMemory:
    """One process's resident memory over a soak: its first, last and largest sample."""

    name: str
    pid: int
    start_bytes: int
    end_bytes: int
    max_bytes: int
    gone: bool = False  # it ended (or its PID was replaced) while the soak ran

    def observe(self, rss: int) -> None:
        self.end_bytes = rss
        self.max_bytes = max(self.max_bytes, rss)

    def summary(self) -> dict[str, Any]:
        growth = self.end_bytes - self.start_bytes
        return {
            "pid": self.pid,
            "start_mib": round(self.start_bytes / MIB, 1),
            "end_mib": round(self.end_bytes / MIB, 1),
            "max_mib": round(self.max_bytes / MIB, 1),
            "growth_mib": round(growth / MIB, 1),
            "growth_pct": round(100.0 * growth / self.start_bytes, 1) if self.start_bytes else None,
            "gone": self.gone,
        }


@dataclass(slots=True)
class StackProcesses:
    """Samples the RSS of every process of a running stack and notices any that died or was replaced."""

    stack: EmbeddedStack
    memory: dict[str, ProcessMemory] = field(default_factory=dict)
    _processes: dict[str, psutil.Process] = field(default_factory=dict)
    _restarts: dict[str, int] = field(default_factory=dict)  # keeper name -> restarts at the start
    events: list[str] = field(default_factory=list)  # what died or restarted, in words, in order

    def start(self) -> dict[str, int]:
        state = self.stack.state()
        if state is None or not state.processes:
            raise BenchError(f"no stack state under {self.stack.state_dir}: `qu up` first")
        for record in state.processes:
            process = record.process()
            if process is None:
                raise BenchError(f"{record.name} (pid {record.pid}) is not running: see {record.log}")
            self._processes[record.name] = process
            if record.name.startswith("worker-"):
                self._add_worker_child(record.name)
            elif record.name == "triton":
                for child in _children(process):
                    self._processes[f"triton/{_stub_model(child)}"] = child
        return self.sample()

    def _add_worker_child(self, name: str) -> None:
        kept = self.stack.keeper_status(name)
        if kept is None or kept.child_pid is None:
            raise BenchError(
                f"{name}'s keeper names no running worker in {self.stack.keeper_status_path(name)}: see `qu status`"
            )
        self._restarts[name] = kept.restarts
        self._processes[f"{name}.keeper"] = self._processes.pop(name)  # the recorded PID is the keeper's
        try:
            self._processes[name] = psutil.Process(kept.child_pid)
        except psutil.NoSuchProcess as err:
            raise BenchError(f"{name}'s worker (pid {kept.child_pid}) is not running") from err

    def sample(self) -> dict[str, int]:
        """name -> RSS in bytes of every process still alive; a process gone since the last sample is noted."""
        out: dict[str, int] = {}
        for name, process in self._processes.items():
            known = self.memory.get(name)
            if known is not None and known.gone:
                continue
            try:
                # is_running() compares the create time too: a recycled PID is not taken for the process.
                if not process.is_running() or process.status() == psutil.STATUS_ZOMBIE:
                    raise psutil.NoSuchProcess(process.pid)
                rss = process.memory_info().rss
            except psutil.NoSuchProcess:
                if known is None:
                    self.memory[name] = ProcessMemory(name, process.pid, 0, 0, 0, gone=True)
                else:
                    known.gone = True
                self.events.append(f"{name} (pid {process.pid}) ended during the soak")
                continue
            if known is None:
                self.memory[name] = ProcessMemory(name, process.pid, rss, rss, rss)
            else:
                known.observe(rss)
            out[name] = rss
        for name, before in self._restarts.items():
            kept = self.stack.keeper_status(name)
            if kept is not None and kept.restarts > before:
                self.events.append(f"{name} was restarted by its keeper {kept.restarts - before} time(s)")
                self._restarts[name] = kept.restarts
        return out

    def cpu_seconds(self) -> dict[str, float]:
        """name -> CPU seconds (user + system) each process has used so far; one that is gone is left out."""
        out: dict[str, float] = {}
        for name, process in self._processes.items():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            out[name] = times.user + times.system
        return out

    def watch(self, name: str, pid: int) -> None:
        """Account for one more process (the bench's passthrough) under ``name``."""
        self._processes[name] = psutil.Process(pid)

    @property
    def died(self) -> list[str]:
        return [name for name, memory in self.memory.items() if memory.gone]


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return list(process.children(recursive=True))
    except psutil.NoSuchProcess:
        return []


def _stub_model(stub: psutil.Process) -> str:
    """The model a Triton Python-backend stub serves: its first argument is ``.../<model>/<version>/model.py``."""
    try:
        arguments = stub.cmdline()
    except psutil.Error:
        arguments = []
    if len(arguments) > 1 and arguments[1].endswith(".py"):
        return Path(arguments[1]).parent.parent.name
    return f"pid-{stub.pid}"


class GroupLag:
    """The worker group's lag on one topic: records delivered there minus records it committed past."""

    def __init__(self, bootstrap: str, topic: str, group: str = WORKER_GROUP, *, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.group = group
        self._reader = GroupLagReader(bootstrap, group, topic, timeout_s=timeout_s)
        try:
            self.partitions = self._reader.partitions()
            self.committed_at_start = self.committed()
        except LagUnavailable as err:
            self._reader.close()
            raise BenchError(str(err)) from err
        except BenchError:
            self._reader.close()
            raise

    def committed(self) -> dict[int, int]:
        """partition -> the group's committed offset (-1 where it committed nothing yet)."""
        try:
            committed = self._reader.committed()
        except LagUnavailable as err:
            raise BenchError(str(err)) from err
        return {p: -1 if offset is None else offset for p, offset in committed.items()}

    def lag(self, delivered_end: dict[tuple[str, int], int]) -> int:
        """Records of ``topic`` the group has not committed past, up to the ends ``delivered_end`` names."""
        committed = self.committed()
        behind = 0
        for partition in self.partitions:
            end = delivered_end.get((self.topic, partition))
            if end is None:
                continue  # nothing of ours went there
            behind += max(0, end - max(committed.get(partition, -1), self.committed_at_start.get(partition, -1), 0))
        return behind

    def close(self) -> None:
        self._reader.close()


def cpu_per_event(before: dict[str, float], after: dict[str, float], events: int) -> dict[str, float]:
    """µs of CPU per event of each process between two :meth:`StackProcesses.cpu_seconds` readings, busiest first,
    with their ``total``; a process idle in between (under 0.5 µs per event) is left out."""
    if events <= 0:
        return {}
    used = {name: (after[name] - before.get(name, 0.0)) * 1e6 / events for name in after}
    busy = {name: round(us, 1) for name, us in sorted(used.items(), key=lambda kv: -kv[1]) if us >= 0.5}
    return {**busy, "total": round(sum(used.values()), 1)}
