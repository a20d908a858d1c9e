"""The processes of the embedded stack, recorded so that a later command can find and stop them.

``qu up`` starts each service as a child in its own session (it outlives ``qu up``) and
records its PID with the process's start time; ``qu status`` and ``qu down`` trust a PID only
when the start time still matches, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import psutil

from services.errors import QuError


class StackError(QuError):
    pass


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    name: str  # "kafka", "redis", "triton", "worker-0", "refresher"
    pid: int
    started: float  # the process's create time, as psutil reports it
    command: list[str]
    log: str

    @classmethod
    def of(cls, name: str, pid: int, command: list[str], log: Path) -> ProcessRecord:
        return cls(name, pid, psutil.Process(pid).create_time(), command, str(log))

    def process(self) -> psutil.Process | None:
        """The live process this record names, or None if it ended (or its PID now names another)."""
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.started) > 0.01 or process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.Error:
            return None

    @property
    def alive(self) -> bool:
        return self.process() is not None

    def group_members(self) -> list[psutil.Process]:
        """The other live processes of the group the recorded process leads (it was started in its own
        session); none when the PID no longer names that process, since its group id is then a stranger's."""
        if self.process() is None:
            return []
        members: list[psutil.Process] = []
        for candidate in psutil.process_iter():
            if candidate.pid == self.pid:
                continue
            with contextlib.suppress(OSError):  # ended meanwhile, or not ours to inspect
                if os.getpgid(candidate.pid) == self.pid:
                    members.append(candidate)
        return members

    def kill_group(self) -> bool:
        """SIGKILL the process group the recorded process leads; returns whether it was signalled.

        Only while the recorded process is alive and is the one the stack started (PID and start
        time): once it is gone its PID, and so its group id, can be reused by anyone's process.
        """
        if self.process() is None:
            return False
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def stop(self, *, timeout: float = 10.0, group: bool = False) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; returns whether it was running. With ``group``, also
        SIGKILL what of its process group outlived it (Triton's Python-backend stubs do)."""
        process = self.process()
        if process is None:
            return False
        # Taken while the PID is proven ours: after the leader exits, its PID proves nothing.
        members = self.group_members() if group else []
        try:
            process.send_signal(signal.SIGTERM)
            _wait_ended(process, timeout)
        except psutil.TimeoutExpired:
            if not (group and self.kill_group()):
                process.kill()
            _wait_ended(process, timeout)
        except psutil.NoSuchProcess:
            pass
        for member in members:
            # psutil checks the member's identity before signalling: a PID reused since the snapshot is spared.
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                member.kill()
        psutil.wait_procs(members, timeout=timeout)
        return True


def _wait_ended(process: psutil.Process, timeout: float) -> None:
    """Until ``process`` has ended; raises psutil.TimeoutExpired after ``timeout``. A process that is not our
    child stays a zombie until its own parent reaps it (a stack started by a test session, stopped by a `qu`
    command it runs): exited is ended, whoever reaps it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            process.wait(min(0.1, max(deadline - time.monotonic(), 0.0)))
            return
        except psutil.TimeoutExpired:
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.NoSuchProcess:
                return
            if time.monotonic() >= deadline:
                raise psutil.TimeoutExpired(timeout, process.pid) from None


@dataclass(slots=True)
class StackState:
    """What ``qu up`` started: endpoints and processes. Lives in STATE_DIR/stack/state.json."""

    endpoints: dict[str, str] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)

    @staticmethod
    def path(state_dir: Path) -> Path:
        return state_dir / "stack" / "state.json"

    def save(self, state_dir: Path) -> None:
        path = self.path(state_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        path = cls.path(state_dir)
        if not path.is_file():
            return None
        try:
            data: dict[str, Any] = orjson.loads(path.read_bytes())
            return cls(
                dict(data["endpoints"]),
                [ProcessRecord(**p) for p in data["processes"]],
                float(data["started_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as err:
            raise StackError(f"{path} is not a stack state file ({err}); remove it if no stack is running") from err

    @classmethod
    def remove(cls, state_dir: Path) -> None:
        cls.path(state_dir).unlink(missing_ok=True)
