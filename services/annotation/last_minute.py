"""Counts of the last minute, for the figures an operator reads first (``qu status``).

Prometheus answers "how many in the last minute" with ``increase()`` over its stored samples; a CLI
that looks once has no samples to compare. So each worker also keeps the last 60 seconds of a few
figures in one-second buckets and serves their sums as the gauge ``qu.worker.last_minute`` (by
``qu.figure``), which ``qu status`` scrapes and adds up across workers. Adding is a dict increment
on the batch's path; nothing is allocated per event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW_S = 60


class LastMinute:
    """Per-figure counts over the last ``window_s`` whole seconds (the current second included)."""

    def __init__(self, window_s: int = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s < 1:
            raise ValueError(f"window_s must be at least 1 second, got {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._seconds = [-1] * window_s  # which second each bucket holds
        self._buckets: list[dict[str, int]] = [{} for _ in range(window_s)]
        # The worker's loop adds, the Prometheus scrape thread sums.
        self._lock = threading.Lock()

    def add(self, figure: str, n: int = 1) -> None:
        second = int(self._clock())
        slot = second % self.window_s
        with self._lock:
            if self._seconds[slot] != second:
                self._seconds[slot] = second
                self._buckets[slot] = {}
            bucket = self._buckets[slot]
            bucket[figure] = bucket.get(figure, 0) + n

    def totals(self) -> dict[str, int]:
        oldest = int(self._clock()) - self.window_s + 1
        out: dict[str, int] = {}
        with self._lock:
            for second, bucket in zip(self._seconds, self._buckets, strict=True):
                if second >= oldest:
                    for figure, n in bucket.items():
                        out[figure] = out.get(figure, 0) + n
        return out
