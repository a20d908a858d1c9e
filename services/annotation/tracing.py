"""Spans of the annotate path: one trace per search event, although the path shares its calls.

The worker starts a ``process qu.search-events.v1`` span per record (a child of the record's
``traceparent``, or a root that the sampler keeps at ``QU_TRACE_SAMPLE_RATIO``) and hands its context
to the handler in :class:`~services.annotation.handler.InputRecord`. The handler's calls are shared:
one Redis MGET for the whole batch, one student call per distinct missed query. :func:`shared_call`
gives every sampled record of such a call a child span of its own, with the call's real start and
end: the first sampled record's span is the call's real parent (so the Redis client span, the gRPC
span and Triton's own spans nest under it), the others get a span with the same times and a link to
that one. An unsampled record costs one ``is_recording()`` check.

Why per-record spans rather than one batch span with links: an SRE follows one event (``qu trace
EVENT_ID``, or a trace id from the search platform's own span), and a batch span would put the
event's Redis and Triton time in another trace. The cost of the unsampled majority is measured in
docs/BENCHMARKS.md (tracing off, 1%, 100%).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import AttributeValue

from services.telemetry import TRACER_NAME
from services.telemetry.kafka_headers import HeaderList, extract_context
from services.telemetry.sampling import PRESAMPLED
from services.wire import RecordOrigin

# A record without a trace context starts a root: given explicitly, the SDK does not look up the current one.
_EMPTY = Context()
_PRESAMPLED_ATTRIBUTES = {PRESAMPLED: True}
_coin = random.Random().random  # the root sampling decision; not for anything secret


def default_tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME)


def recording_span(context: Context | None) -> Span | None:
    """The record's span when it is sampled, else None."""
    if context is None:
        return None
    span = trace.get_current_span(context)
    return span if span.is_recording() else None


@contextmanager
def shared_call(
    tracer: Tracer,
    name: str,
    contexts: Sequence[Context | None],
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: dict[str, AttributeValue] | None = None,
) -> Iterator[Span | None]:
    """A call made once for several records: a span per sampled record, the first the call's real parent.

    Yields the first sampled record's span (current while the call runs), or None when no record is sampled
    (then the call runs in an empty context: nothing downstream starts or propagates a trace for it)."""
    sampled = [c for c in contexts if recording_span(c) is not None]
    if not sampled:
        token = otel_context.attach(Context())
        try:
            yield None
        finally:
            otel_context.detach(token)
        return
    first, *others = sampled
    with tracer.start_as_current_span(name, context=first, kind=kind, attributes=attributes) as span:
        failure: BaseException | None = None
        try:
            yield span
        except BaseException as exc:
            failure = exc
            raise
        finally:
            # The others' spans are made when the call is over: same start and end, a link to the real one.
            link = [Link(span.get_span_context())]
            start = getattr(span, "start_time", None)
            final = dict(getattr(span, "attributes", None) or attributes or {})  # with what the call added
            for context in others:
                twin = tracer.start_span(
                    name, context=context, kind=kind, attributes=final, links=link, start_time=start
                )
                if failure is not None:
                    twin.set_status(Status(StatusCode.ERROR, f"{type(failure).__name__}: {failure}"))
                twin.end()


def process_context(
    tracer: Tracer,
    headers: HeaderList | None,
    origin: RecordOrigin,
    *,
    group: str,
    batch_size: int,
    root_ratio: float,
) -> Context | None:
    """Start the ``process <topic>`` span of one consumed record; returns its context, or None for a record that
    is neither sampled nor part of a trace (most of them, at a small ratio: nothing more is spent on those).

    A record without a trace context is kept at ``root_ratio`` by a coin flipped here, before any span exists
    (services/telemetry/sampling.py says why); one with a context follows its parent's sampled flag."""
    parent = extract_context(headers)
    if parent is None:
        if root_ratio <= 0.0 or (root_ratio < 1.0 and _coin() >= root_ratio):
            return None
        span = tracer.start_span(
            f"process {origin.topic}", context=_EMPTY, kind=SpanKind.CONSUMER, attributes=_PRESAMPLED_ATTRIBUTES
        )
    else:
        span = tracer.start_span(f"process {origin.topic}", context=parent, kind=SpanKind.CONSUMER)
    if span.is_recording():
        span.set_attributes(
            _kafka(
                "process",
                origin.topic,
                {
                    "messaging.destination.partition.id": str(origin.partition),
                    "messaging.kafka.offset": origin.offset,
                    "messaging.consumer.group.name": group,
                    "messaging.batch.message_count": batch_size,
                },
            )
        )
    return trace.set_span_in_context(span)


def send_span(tracer: Tracer, context: Context, topic: str) -> Span:
    """A ``send <topic>`` span under the record's span; its context goes into the outgoing record's headers."""
    return tracer.start_span(
        f"send {topic}",
        context=context,
        kind=SpanKind.PRODUCER,
        attributes=_kafka("send", topic),
    )


def _kafka(operation: str, topic: str, more: dict[str, AttributeValue] | None = None) -> dict[str, AttributeValue]:
    """OpenTelemetry's messaging attributes of a Kafka ``operation`` on ``topic``."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
        **(more or {}),
    }
