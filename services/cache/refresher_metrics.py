"""The head-tag refresher's counters as OpenTelemetry observable counters (its Prometheus endpoint shows them).

``qu.refresher.runs_activated`` becomes ``qu_refresher_runs_activated_total``; each counter means what its
field of :class:`~services.cache.refresher.RefresherCounters` says. Observed on each collection: the
refresher keeps counting in plain integers, at no cost on its path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from services.cache.refresher import RefresherCounters

_UNITS = {"records": "{record}", "entries_written": "{entry}", "items_dropped": "{item}", "commits": "{commit}"}


def watch_refresher(counters: RefresherCounters, meter: Meter | None = None) -> None:
    meter = meter or metrics.get_meter("qu.refresher")
    for spec in fields(counters):
        name = spec.name

        def observe(_options: CallbackOptions, name: str = name) -> Iterable[Observation]:
            return [Observation(getattr(counters, name))]

        meter.create_observable_counter(
            f"qu.refresher.{name}",
            callbacks=[observe],
            unit=_UNITS.get(name, "{run}" if name.startswith("runs_") else "1"),
            description=f"The head-tag refresher's {name.replace('_', ' ')} since it started.",
        )
