"""What one benchmark phase measured, and the numbers made from it."""

from __future__ import annotations

import math
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in [0, 100]) of already sorted values; NaN when there are none.

    Nearest rank, not interpolation: a reported p99 is a latency one event really had.
    """
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class PhaseResult:
    """One phase: ``sent`` events produced, which of them came back, and when."""

    name: str
    sent: int
    target_rate: float  # events/s asked for; 0 = unthrottled
    send_seconds: float  # first produce -> last produce
    span_seconds: float  # first produce -> last answer consumed
    latencies_ms: list[float] = field(default_factory=list)  # one per answered event, produce -> consumed
    sources: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # answers seen again for an event already answered (at-least-once redelivery)

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    @property
    def events_per_s(self) -> float:
        """Answered events over the phase's span: sustained end-to-end throughput."""
        return self.answered / self.span_seconds if self.span_seconds > 0 else 0.0

    @property
    def offered_rate(self) -> float:
        """The produce rate actually achieved (a paced phase should be close to its target)."""
        return self.sent / self.send_seconds if self.send_seconds > 0 else math.inf

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)
        out: dict[str, Any] = {
            "events": self.sent,
            "answered": self.answered,
            "target_rate": self.target_rate or None,
            "offered_rate": _round(self.offered_rate),
            "events_per_s": _round(self.events_per_s),
            "seconds": _round(self.span_seconds, 3),
            "p50_ms": _round(percentile(ordered, 50)),
            "p95_ms": _round(percentile(ordered, 95)),
            "p99_ms": _round(percentile(ordered, 99)),
            "max_ms": _round(ordered[-1] if ordered else math.nan),
            "sources": dict(sorted(self.sources.items())),
        }
        if self.duplicates:
            out["duplicates"] = self.duplicates
        return out


def _round(value: float, digits: int = 2) -> float | None:
    """JSON has no NaN or infinity: a figure that could not be measured is null."""
    return round(value, digits) if math.isfinite(value) else None


def machine() -> dict[str, Any]:
    """What ran a measurement, kept beside its figures."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "at": time.strftime("%Y-%m-%d")}
