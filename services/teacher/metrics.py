"""The teacher's OpenTelemetry counters: what a run taught, what it kept out and why, what it cost.

A teacher run is a job, not a server: there is no endpoint to scrape, so ``qu teacher run`` pushes these
over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the collector's Prometheus exporter makes them
scrape-able), flushed when the run ends; the run's JSON summary holds the same figures for one run.
Without a configured meter provider the instruments are the API's no-ops.

- ``qu.teacher.queries`` ({query}): queries taught in this process (resumed ones not again);
- ``qu.teacher.calls`` ({call}; ``qu.task``, ``qu.teacher.status``): backend calls by outcome
  (answered, invalid, unavailable, rejected, failed): every status but answered is a backend error;
- ``qu.teacher.tokens`` ({token}; ``gen_ai.token.type`` input | output) and ``qu.teacher.cost`` (USD);
- ``qu.teacher.guardrail.dropped`` ({item}; ``qu.guardrail.check``): answer items a guardrail dropped;
- ``qu.teacher.unpublished`` ({query}; ``qu.reason``): head-set queries kept out of the cache.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import Meter

from services.domain import GuardrailDecision
from services.teacher.backend import TeacherAnswer

METER_NAME = "qu.teacher"


class TeacherMetrics:
    """The counters of one teacher process; ``meter`` defaults to the global meter provider's."""

    def __init__(self, meter: Meter | None = None) -> None:
        meter = meter or metrics.get_meter(METER_NAME)
        self._queries = meter.create_counter("qu.teacher.queries", unit="{query}", description="Queries taught.")
        self._calls = meter.create_counter(
            "qu.teacher.calls", unit="{call}", description="Teacher backend calls by task and outcome."
        )
        self._tokens = meter.create_counter("qu.teacher.tokens", unit="{token}", description="Tokens used.")
        self._cost = meter.create_counter("qu.teacher.cost", unit="USD", description="Cost of the backend calls.")
        self._dropped = meter.create_counter(
            "qu.teacher.guardrail.dropped", unit="{item}", description="Answer items dropped by a guardrail."
        )
        self._unpublished = meter.create_counter(
            "qu.teacher.unpublished", unit="{query}", description="Head-set queries kept out of the cache, by reason."
        )

    def call(self, task: str, status: str, answer: TeacherAnswer | None) -> None:
        self._calls.add(1, {"qu.task": task, "qu.teacher.status": status})
        if answer is not None:
            self._tokens.add(answer.usage.prompt_tokens, {"gen_ai.token.type": "input"})
            self._tokens.add(answer.usage.completion_tokens, {"gen_ai.token.type": "output"})
            self._cost.add(answer.cost_usd)

    def guardrails(self, decisions: Iterable[GuardrailDecision]) -> None:
        for check, count in Counter(d.check for d in decisions if not d.kept).items():
            self._dropped.add(count, {"qu.guardrail.check": check})

    def taught(self, queries: int) -> None:
        self._queries.add(queries)

    def unpublished(self, reasons: Counter[str]) -> None:
        for reason, count in reasons.items():
            self._unpublished.add(count, {"qu.reason": reason})
