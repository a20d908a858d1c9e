"""OpenTelemetry for the engine: traces, metrics and the context that travels in Kafka headers.

- :mod:`services.telemetry.setup` configures the SDK (sampler, OTLP export, the Prometheus endpoint,
  Redis instrumentation). Only entrypoints call it: the worker, the refresher, the CLI.
- :mod:`services.telemetry.kafka_headers` carries W3C ``traceparent``/``tracestate`` in Kafka record
  headers (extract on consume, inject on produce).
- Everything else in ``services`` uses only the OpenTelemetry API (``trace.get_tracer``,
  ``metrics.get_meter``): without a configured SDK those calls are no-ops, so tests and offline tools
  pay nothing.
"""

TRACER_NAME = "qu"
