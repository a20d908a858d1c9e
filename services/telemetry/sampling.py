"""The worker's sampler: parent-based, with roots either decided before the span or by trace-id ratio.

Most search events arrive without a trace context and most of those are not sampled. Asking the SDK
to start a span only to learn that it is not sampled costs ~5 µs per event (the SDK builds ids, flags
and a span context for the dropped span), which was most of tracing's overhead at a 1% ratio
(docs/BENCHMARKS.md). So the worker flips the coin itself for a record without a context
(:func:`services.annotation.tracing.process_context`, at ``QU_TRACE_SAMPLE_RATIO``) and starts a span
only for the few it keeps, marked :data:`PRESAMPLED`; this sampler records exactly those, and decides
every other root (a Redis call outside any record, the refresher's run activation) by the trace id's
ratio as the SDK's own sampler would. Children follow their parent (``ParentBased``).
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

# An attribute the caller sets on a root span it decided to sample; the sampler removes it from the span.
PRESAMPLED = "qu.sampling.presampled"


class PresampledOrRatio(Sampler):
    """Root sampler: a span marked :data:`PRESAMPLED` is recorded and sampled, any other by trace-id ratio."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if attributes and attributes.get(PRESAMPLED):
            kept = {k: v for k, v in attributes.items() if k != PRESAMPLED}
            return SamplingResult(Decision.RECORD_AND_SAMPLE, kept, trace_state)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"PresampledOrRatio{{{self._ratio.get_description()}}}"


def worker_sampler(ratio: float) -> Sampler:
    return ParentBased(PresampledOrRatio(ratio))
