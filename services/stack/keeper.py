"""Keep one process of the embedded stack running: start it again when it dies, with backoff, and say so.

``qu up`` runs each Faust worker under a keeper (``python -m services.stack.keeper --name worker-0
--status FILE -- COMMAND...``). A worker stops on purpose when an outcome could not be delivered (it
must not commit what it did not deliver), and it can crash or be killed like any process; either way
the keeper starts it again after a delay that doubles with each quick death (up to ``--max-backoff``)
and falls back to the first delay once a run has lasted ``--stable-after`` seconds. Each restart is
one line in the log the worker writes to, and the status file says how many there were, the last
exit and the running child's PID, for ``qu status`` and for tests.

SIGTERM or SIGINT to the keeper is passed to the child; the keeper waits for it (SIGKILL after
``--stop-timeout``) and exits 0: it was asked to stop. The recorded PID of the service is the keeper's.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

import orjson

PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(slots=True)
class KeeperStatus:
    name: str
    child_pid: int | None = None
    started_at: float = 0.0  # when the running child started (time.time())
    restarts: int = 0
    exits: list[dict[str, float | int]] = field(default_factory=list)  # the last few: code, ran_s, at

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(asdict(self)))
        os.replace(tmp, path)  # a reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> KeeperStatus | None:
        try:
            return cls(**orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 30.0
    stable_after_s: float = 60.0

    def delay(self, previous_s: float | None, ran_s: float) -> float:
        """The wait before the next start, given the last wait and how long the last run lasted."""
        if previous_s is None or ran_s >= self.stable_after_s:
            return self.first_s
        return min(self.max_s, previous_s * 2)


class Keeper:
    def __init__(self, name: str, command: list[str], status_path: Path, backoff: Backoff, stop_timeout_s: float):
        self.name = name
        self.command = command
        self.status_path = status_path
        self.backoff = backoff
        self.stop_timeout_s = stop_timeout_s
        self.status = KeeperStatus(name)
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def _say(self, message: str) -> None:
        # The child writes to the same file (inherited stdout): one line each, flushed, stays readable.
        print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] qu keeper: {self.name} {message}", flush=True)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        delay: float | None = None
        while True:
            started = time.monotonic()
            self._child = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
            self.status.child_pid, self.status.started_at = self._child.pid, time.time()
            self.status.save(self.status_path)
            code = self._wait_child()
            ran_s = time.monotonic() - started
            self.status.exits = [*self.status.exits[-9:], {"code": code, "ran_s": round(ran_s, 3), "at": time.time()}]
            self.status.child_pid = None
            self.status.save(self.status_path)
            if self._stopping.is_set():
                self._say(f"stopped as asked (the child's exit code: {code})")
                return 0
            delay = self.backoff.delay(delay, ran_s)
            self.status.restarts += 1
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            self._say(f"{how} after {ran_s:.1f} s; restarting in {delay:.1f} s (restart {self.status.restarts})")
            if self._stopping.wait(delay):
                self._say("stopped as asked while waiting to restart")
                return 0

    def _wait_child(self) -> int:
        assert self._child is not None
        while True:
            try:
                return self._child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self._stopping.is_set():
                    return self._stop_child()

    def _stop_child(self) -> int:
        assert self._child is not None
        try:
            return self._child.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self._say(f"did not stop within {self.stop_timeout_s:.0f} s of SIGTERM: killing it")
            self._child.kill()
            return self._child.wait()


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when the keeper dies (Linux), so a killed keeper leaves no orphan
    holding the worker's partitions and port while a new keeper starts another."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the keeper died before prctl took effect
            os._exit(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.stack.keeper", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the service's name, e.g. worker-0")
    parser.add_argument("--status", required=True, type=Path, help="where to write the keeper's status (JSON)")
    defaults = Backoff()
    parser.add_argument("--first-backoff", type=float, default=defaults.first_s, help="seconds before a restart")
    parser.add_argument("--max-backoff", type=float, default=defaults.max_s, help="the longest wait between starts")
    parser.add_argument("--stable-after", type=float, default=defaults.stable_after_s, help="a run this long resets")
    parser.add_argument("--stop-timeout", type=float, default=8.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to keep running")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run: give it after --")
    backoff = Backoff(args.first_backoff, args.max_backoff, args.stable_after)
    return Keeper(args.name, command, args.status, backoff, args.stop_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
