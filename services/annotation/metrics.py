"""The real-time path's metrics, as OpenTelemetry instruments (exported for Prometheus by the worker).

Names follow OpenTelemetry's conventions (dots, a unit per instrument); the Prometheus exporter writes
``qu.worker.annotations`` as ``qu_worker_annotations_total`` and ``qu.worker.latency`` (unit ``s``) as
``qu_worker_latency_seconds_bucket``/``_sum``/``_count``. docs/OBSERVABILITY.md lists them all with their
meaning. Instruments come from the global meter provider: until an entrypoint configures the SDK
(services.telemetry.setup) they are no-ops, so a test or an offline tool records nothing and pays ~nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from services.annotation.last_minute import LastMinute
from services.circuit_breaker import CircuitBreaker, CircuitState

CacheResult = Literal["hit", "miss", "unavailable"]
StudentResult = Literal["answered", "unavailable", "circuit_open", "malformed"]
# Seconds; the latency of an event spans the broker's two hops (~30 ms each here) to a degraded answer's deadline.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class AnnotateMetrics:
    """The instruments of the annotate path; one per process (``AnnotateMetrics()``)."""

    def __init__(self, meter: Meter | None = None) -> None:
        meter = meter or metrics.get_meter("qu.annotate")
        self.events = meter.create_counter(
            "qu.worker.events", unit="{event}", description="Records taken from qu.search-events.v1."
        )
        self.annotations = meter.create_counter(
            "qu.worker.annotations",
            unit="{annotation}",
            description="Annotations delivered to qu.query-annotations.v1, by source and degraded flag.",
        )
        self.dead_letters = meter.create_counter(
            "qu.worker.dead_letters", unit="{record}", description="Dead letters delivered, by reason."
        )
        self.cache_lookups = meter.create_counter(
            "qu.worker.cache.lookups",
            unit="{event}",
            description="Head-tag cache lookups per event: hit, miss, or unavailable (Redis down, circuit open).",
        )
        self.latency = meter.create_histogram(
            "qu.worker.latency",
            unit="s",
            description="The event's Kafka timestamp to its annotation delivered (includes the broker hop in).",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.processing = meter.create_histogram(
            "qu.worker.processing.duration",
            unit="s",
            description="The record handed to the handler to its outcome known (decode, cache, student, guardrails).",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.student = meter.create_histogram(
            "qu.worker.student.duration",
            unit="s",
            description="One student call as the handler waited for it, by result.",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.batch_size = meter.create_histogram(
            "qu.worker.batch.size",
            unit="{record}",
            description="Records per batch the worker took.",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )
        self._meter = meter
        self.last_minute = LastMinute()

        def last_minute(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(n, {"qu.figure": figure}) for figure, n in self.last_minute.totals().items()]

        meter.create_observable_gauge(
            "qu.worker.last_minute",
            callbacks=[last_minute],
            unit="{event}",
            description="Counts of the last 60 s by figure (events, cache_hits, cache_lookups, annotations.SOURCE, "
            "degraded, dead_letters): what `qu status` shows; in Prometheus use increase() on the counters.",
        )

    def count_events(self, n: int) -> None:
        self.events.add(n)
        self.last_minute.add("events", n)

    def count_lookups(self, hits: int, others: int, *, available: bool) -> None:
        """``hits`` found in the cache, ``others`` missed (or not asked: the cache was unavailable)."""
        if hits:
            self.cache_lookups.add(hits, {"qu.cache.result": "hit"})
            self.last_minute.add("cache_hits", hits)
        if others:
            self.cache_lookups.add(others, {"qu.cache.result": "miss" if available else "unavailable"})
        self.last_minute.add("cache_lookups", hits + others)

    def count_annotations(self, counts: Mapping[tuple[str, bool], int]) -> None:
        """A batch's annotations delivered, by (source, degraded): one add each, not one per annotation."""
        for (source, degraded), n in counts.items():
            self.annotations.add(n, {"qu.source": source, "qu.degraded": degraded})
            self.last_minute.add(f"annotations.{source}", n)
            if degraded:
                self.last_minute.add("degraded", n)

    def count_dead_letters(self, counts: Mapping[str, int]) -> None:
        """A batch's dead letters delivered, by reason."""
        for reason, n in counts.items():
            self.dead_letters.add(n, {"qu.reason": reason})
            self.last_minute.add("dead_letters", n)

    def watch_circuits(self, breakers: Iterable[CircuitBreaker]) -> None:
        """Observe the circuits' state (0 closed, 1 half-open, 2 open) and the calls they refused."""
        watched = list(breakers)

        def state(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(_CIRCUIT_VALUE[b.state], {"qu.dependency": b.name}) for b in watched]

        def rejected(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(b.rejected, {"qu.dependency": b.name}) for b in watched]

        self._meter.create_observable_gauge(
            "qu.worker.circuit.state",
            callbacks=[state],
            unit="1",
            description="A dependency's circuit: 0 closed, 1 half-open (probing), 2 open (not asked).",
        )
        self._meter.create_observable_counter(
            "qu.worker.circuit.rejected",
            callbacks=[rejected],
            unit="{call}",
            description="Calls an open circuit refused at once (each one a timeout not waited for).",
        )
