"""Trace context in Kafka record headers: the W3C ``traceparent`` / ``tracestate`` pair, through the
globally configured propagator (W3C trace context and baggage by default, ``OTEL_PROPAGATORS`` otherwise).

Kafka headers are a list of (str key, bytes value) pairs, repeats allowed; a value that is not UTF-8 or a
malformed traceparent is ignored (the event starts a root trace of its own), never an error: the trace
context is a hint, the event is the data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter

# What Kafka clients hand over: a list of pairs (aiokafka, confluent-kafka) or a mapping (some Faust paths).
HeaderList = Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None]
# The keys a W3C propagator reads; a record with none of them skips the propagator entirely (most records).
_TRACE_KEYS = frozenset({"traceparent", "tracestate", "baggage"})


def _pairs(carrier: HeaderList) -> Iterable[tuple[str, bytes | str | None]]:
    return carrier.items() if isinstance(carrier, Mapping) else carrier


class _HeaderGetter(Getter[HeaderList]):
    def get(self, carrier: HeaderList, key: str) -> list[str] | None:
        values = []
        for name, value in _pairs(carrier):
            if name.lower() != key or value is None:
                continue
            if isinstance(value, str):
                values.append(value)
                continue
            try:
                values.append(value.decode())
            except UnicodeDecodeError:
                continue
        return values or None

    def keys(self, carrier: HeaderList) -> list[str]:
        return [name for name, _ in _pairs(carrier)]


class _HeaderSetter(Setter[list[tuple[str, bytes]]]):
    def set(self, carrier: list[tuple[str, bytes]], key: str, value: str) -> None:
        carrier.append((key, value.encode()))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def extract_context(headers: HeaderList | None) -> Context | None:
    """The context a producer put in ``headers``, or None when they carry none."""
    if not headers or not any(name.lower() in _TRACE_KEYS for name, _ in _pairs(headers)):
        return None
    return propagate.extract(headers, getter=_GETTER)


def inject_context(headers: list[tuple[str, bytes]], context: Context | None = None) -> list[tuple[str, bytes]]:
    """Append the context's trace headers (the current context's when None) to ``headers``; returns them.
    An unsampled or invalid span adds nothing the propagator would not (W3C writes traceparent for any valid span)."""
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers
