"""The few figures an operator reads first, for ``qu status``: the last minute of every worker, and the lag.

The last minute comes from each worker's Prometheus endpoint (``qu_worker_last_minute`` by ``qu_figure``,
services/annotation/last_minute.py), scraped over HTTP and added up across workers; the lag of the
workers' group on the search events is read from the broker (services/consumer_lag.py). A worker that
does not answer, or a broker that does not, is named in the figures instead of failing the status.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.annotation.last_minute import WINDOW_S
from services.consumer_lag import GroupLagReader, LagUnavailable
from services.topics import SEARCH_EVENTS, WORKER_GROUP

LAST_MINUTE_METRIC = "qu_worker_last_minute"
SOURCES = ("cache", "student", "fallback")


@dataclass
class OperatorFigures:
    window_s: int = WINDOW_S
    events: int = 0
    cache_hits: int = 0
    cache_lookups: int = 0
    annotations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCES, 0))
    degraded: int = 0
    dead_letters: int = 0
    lag: dict[int, int] | None = None  # partition -> records behind; None when the broker did not say
    unreachable: dict[str, str] = field(default_factory=dict)  # what could not be read -> why

    @property
    def hit_ratio(self) -> float | None:
        return self.cache_hits / self.cache_lookups if self.cache_lookups else None

    @property
    def total_lag(self) -> int | None:
        return sum(self.lag.values()) if self.lag is not None else None

    def to_json(self) -> dict[str, object]:
        lag = {str(p): n for p, n in self.lag.items()} if self.lag is not None else None  # JSON keys are strings
        return {**asdict(self), "lag": lag, "hit_ratio": self.hit_ratio, "total_lag": self.total_lag}


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """``OperatorFigures.to_json()`` as the lines ``qu status`` prints."""
    ratio = figures.get("hit_ratio")
    annotations = figures.get("annotations") or {}
    out = [
        f"last {figures['window_s']} s: {figures['events']:,} events, hit ratio "
        + (f"{ratio:.1%}" if ratio is not None else "n/a (no lookups)")
        + ", annotated "
        + ", ".join(f"{n:,} by {source}" for source, n in annotations.items())
        + f"; {figures['degraded']:,} degraded, {figures['dead_letters']:,} dead letters"
    ]
    lag = figures.get("lag")
    if lag is not None:
        parts = " ".join(f"p{p}:{n}" for p, n in sorted((int(p), n) for p, n in lag.items()))
        out.append(f"lag of {WORKER_GROUP} on {SEARCH_EVENTS}: {figures['total_lag']:,} records ({parts})")
    out += [f"not read: {what}: {why}" for what, why in (figures.get("unreachable") or {}).items()]
    return out


def read_figures(worker_metrics: dict[str, str], bootstrap: str, *, timeout_s: float = 3.0) -> OperatorFigures:
    """``worker_metrics``: worker name -> its Prometheus URL; ``bootstrap``: the broker the workers read."""
    figures = OperatorFigures()
    for name, url in sorted(worker_metrics.items()):
        try:
            counts = _last_minute(url, timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as err:
            figures.unreachable[f"{name} ({url})"] = str(getattr(err, "reason", err))
            continue
        figures.events += counts.get("events", 0)
        figures.cache_hits += counts.get("cache_hits", 0)
        figures.cache_lookups += counts.get("cache_lookups", 0)
        figures.degraded += counts.get("degraded", 0)
        figures.dead_letters += counts.get("dead_letters", 0)
        for figure, n in counts.items():
            if figure.startswith("annotations."):
                source = figure.removeprefix("annotations.")
                figures.annotations[source] = figures.annotations.get(source, 0) + n
    reader = None
    try:
        reader = GroupLagReader(bootstrap, WORKER_GROUP, SEARCH_EVENTS, timeout_s=timeout_s)
        figures.lag = {p.partition: p.lag for p in reader.read()}
    except LagUnavailable as err:
        figures.unreachable[f"the lag at {bootstrap}"] = str(err)
    finally:
        if reader is not None:
            reader.close()
    return figures


def _last_minute(url: str, timeout_s: float) -> dict[str, int]:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == LAST_MINUTE_METRIC:
                figure = sample.labels.get("qu_figure", "")
                counts[figure] = counts.get(figure, 0) + int(sample.value)
    return counts
