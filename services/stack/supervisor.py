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

    def kill_group(self) -> None:
        """SIGKILL what is left of the process group the process led (it was started in its own session)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def stop(self, *, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; returns whether it was running."""
        process = self.process()
        if process is None:
            return False
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        except psutil.NoSuchProcess:
            pass
        return True


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
