"""A long-running process's health, as its Kubernetes probes read it (``/livez``, ``/readyz``).

``Health`` is written from the process's event loop (``beat()`` about once a second, ``ready()`` /
``unready()`` as its dependencies come and go) and read from the admin server's threads
(services/telemetry/admin_server.py), hence the lock. Nothing here knows Faust or HTTP.

- **Liveness** answers "is this process wedged, so that only a restart helps?". It fails only when the
  event loop's heartbeat has been silent for longer than ``stall_s`` (``QU_HEALTH_STALL_S``): the beat comes
  from the loop while the probe is served from another thread, so a blocked loop (a blocking call, a hot
  loop that never awaits) shows up here. A dependency that is down is not a liveness failure: restarting the
  process would not bring Redis or the broker back, and a liveness probe that follows dependencies restarts
  every pod at once when one of them blinks.
- **Readiness** answers "should this process get work (traffic, a rollout's go-ahead) now?". It is OK only
  when every check declared at construction is ready and the process is not stopping.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

STARTING = "starting"


@dataclass(frozen=True)
class Probe:
    """One probe's answer: ``ok`` and a JSON-able ``detail`` (what the endpoint returns as its body)."""

    ok: bool
    detail: dict[str, Any]


class Health:
    """Liveness from a heartbeat, readiness from named checks. Thread-safe.

    ``checks`` names what must be ready before the process is (e.g. ``("handler",)``); each starts unready
    (reason ``starting``), so readiness can never be OK just because nothing has registered yet. ``ready()``
    and ``unready()`` take only those names: a misspelt one is a programming error, raised at once.

    Before the first ``beat()`` liveness is OK: the loop may not run yet because the process is still
    starting (importing, loading a catalog, joining its group), and that can take longer than any stall limit.
    Whether a process ever gets going is the readiness (or startup) probe's business, which fails until the
    checks are ready; a liveness probe that failed during start-up would kill a slow start in a restart loop.
    Once the loop has beaten, silence past ``stall_s`` means it is stuck.
    """

    def __init__(self, checks: Iterable[str], *, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if stall_s <= 0:
            raise ValueError(f"stall_s must be positive, not {stall_s}")
        self._stall_s = stall_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checks: dict[str, str | None] = {name: STARTING for name in checks}  # name -> None (ready) or reason
        self._last_beat: float | None = None
        self._beats = 0
        self._stopping: str | None = None

    @property
    def stall_s(self) -> float:
        return self._stall_s

    def beat(self) -> None:
        """The event loop is alive; called from the loop about once a second."""
        now = self._clock()
        with self._lock:
            self._last_beat = now
            self._beats += 1

    def ready(self, check: str) -> None:
        with self._lock:
            self._known(check)
            self._checks[check] = None

    def unready(self, check: str, reason: str) -> None:
        with self._lock:
            self._known(check)
            self._checks[check] = reason

    def stopping(self, reason: str = "stopping") -> None:
        """The process is shutting down: never ready again (liveness is unchanged)."""
        with self._lock:
            if self._stopping is None:
                self._stopping = reason

    def liveness(self) -> Probe:
        now = self._clock()
        with self._lock:
            last, beats = self._last_beat, self._beats
        detail: dict[str, Any] = {"stall_s": self._stall_s, "beats": beats}
        if last is None:
            detail.update(ok=True, last_beat_s_ago=None, reason="no heartbeat yet: starting")
            return Probe(True, detail)
        silent = max(now - last, 0.0)
        detail["last_beat_s_ago"] = round(silent, 3)
        ok = silent <= self._stall_s
        detail["ok"] = ok
        if not ok:
            detail["reason"] = f"the event loop has not beaten for {silent:.1f} s (limit {self._stall_s:g} s)"
        return Probe(ok, detail)

    def readiness(self) -> Probe:
        with self._lock:
            checks = dict(self._checks)
            stopping = self._stopping
        failing = {name: reason for name, reason in checks.items() if reason is not None}
        ok = not failing and stopping is None
        detail: dict[str, Any] = {
            "ok": ok,
            "checks": {name: "ready" if reason is None else reason for name, reason in checks.items()},
        }
        if failing:
            detail["failing"] = sorted(failing)
        if stopping is not None:
            detail["stopping"] = stopping
        return Probe(ok, detail)

    def _known(self, check: str) -> None:
        if check not in self._checks:
            raise ValueError(f"unknown health check {check!r}; declared: {sorted(self._checks)}")


async def heartbeat(health: Health, *, every_s: float = 1.0) -> None:
    """Beat ``health`` from the running event loop every ``every_s`` until cancelled."""
    while True:
        health.beat()
        await asyncio.sleep(every_s)
