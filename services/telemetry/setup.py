"""Configuring the OpenTelemetry SDK for one process. Entrypoints only (worker, refresher, CLI commands).

- **Traces**: parent-based sampling (``QU_TRACE_SAMPLE_RATIO`` for events that arrive without a sampled
  parent); spans go through a ``BatchSpanProcessor`` to OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT``
  is set. The processor's queue is bounded and it drops spans when full: exporting never blocks an
  event, and a collector that is down costs spans, never events.
- **Metrics**: a Prometheus endpoint on ``QU_METRICS_HOST:QU_METRICS_PORT`` (loopback by default), and
  OTLP when the endpoint is set. The same port serves the process's probes, ``/livez`` and ``/readyz``, when
  the entrypoint hands over its ``Health`` (services/telemetry/admin_server.py).
- **Redis**: redis-py is instrumented (its client spans nest under the caller's span).

The rest of the ``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_HEADERS``, timeouts, ``OTEL_PROPAGATORS``) are read by the SDK itself, as anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from services.errors import QuError
from services.health import Health
from services.settings import Settings
from services.telemetry.admin_server import AdminServer, admin_app, serve_admin
from services.telemetry.sampling import worker_sampler

log = logging.getLogger(__name__)

# Spans held for export at most; past it the processor drops them (counted by the SDK), never waits.
SPAN_QUEUE_MAX = 8192
# A span reaches the collector (and `qu trace`) within about this; the SDK default is 5 s.
EXPORT_EVERY_MS = 1000


class TelemetryError(QuError):
    """Telemetry could not be set up as configured (the message names the setting)."""


@dataclass
class Telemetry:
    """What :func:`configure_telemetry` set up; ``shutdown()`` flushes and stops it (at the process's end)."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider | None  # None when nothing reads metrics (no Prometheus endpoint, no OTLP)
    metrics_address: str | None = None  # host:port of the Prometheus endpoint, when there is one
    admin_server: AdminServer | None = None  # what serves it (and the probes)
    _shut: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        if self._shut:
            return
        self._shut = True
        self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.admin_server is not None:
            self.admin_server.close()


def configure_telemetry(
    settings: Settings,
    service_name: str,
    *,
    metrics_port: int | None = None,
    span_processors: list[SpanProcessor] | None = None,
    metric_readers: list[MetricReader] | None = None,
    instrument_redis: bool = True,
    global_providers: bool = True,
    health: Health | None = None,
) -> Telemetry:
    """Set this process's global tracer and meter providers. ``metrics_port`` overrides ``settings.metrics_port``
    (0: no Prometheus endpoint); ``span_processors`` and ``metric_readers`` are added to what the settings ask
    for (tests pass in-memory ones). A command that runs and ends (``qu teacher run``) passes
    ``global_providers=False`` and hands ``tracer_provider`` to what it runs: a process that goes on after it
    (a test session running commands in-process) keeps its own providers, untouched and not shut down.
    ``health``, from a long-running process's entrypoint, is served as ``/livez`` and ``/readyz`` beside
    ``/metrics`` (with no Prometheus endpoint there are no probes either)."""
    resource = Resource.create(
        {
            SERVICE_NAME: service_name,
            SERVICE_NAMESPACE: "qu",
            SERVICE_INSTANCE_ID: f"{socket.gethostname()}-{os.getpid()}",
        }
    )
    tracer_provider = TracerProvider(resource=resource, sampler=worker_sampler(settings.trace_sample_ratio))
    for processor in span_processors or []:
        tracer_provider.add_span_processor(processor)
    traces_url = settings.otlp_traces_endpoint or (
        _signal_url(settings.otlp_endpoint, "traces") if settings.otlp_endpoint else None
    )
    if traces_url:
        tracer_provider.add_span_processor(_ServiceOnSpans(service_name))
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                _otlp_span_exporter(traces_url), max_queue_size=SPAN_QUEUE_MAX, schedule_delay_millis=EXPORT_EVERY_MS
            )
        )
    if global_providers:
        trace.set_tracer_provider(tracer_provider)

    readers = list(metric_readers or [])
    port = settings.metrics_port if metrics_port is None else metrics_port
    address = None
    admin_server = None
    if port:
        admin_server = _admin_server(settings.metrics_host, port, health)
        readers.append(_prometheus_reader())
        address = f"{settings.metrics_host}:{port}"
    if settings.otlp_endpoint:
        readers.append(PeriodicExportingMetricReader(_otlp_metric_exporter(settings.otlp_endpoint)))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers) if readers else None
    if meter_provider is not None and global_providers:
        metrics.set_meter_provider(meter_provider)

    if instrument_redis:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        instrumentor = RedisInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(tracer_provider=tracer_provider)
    return Telemetry(tracer_provider, meter_provider, address, admin_server)


class _ServiceOnSpans(SpanProcessor):
    """``service.name`` on each recorded span too: a store that keeps spans without their resource (the
    embedded trace store, services/telemetry/span_store.py) can still say which process made each."""

    def __init__(self, service_name: str) -> None:
        self._service = service_name

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span.set_attribute(SERVICE_NAME, self._service)


def _otlp_span_exporter(url: str) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=url)


def _otlp_metric_exporter(endpoint: str) -> MetricExporter:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=_signal_url(endpoint, "metrics"))


def _signal_url(endpoint: str, signal: str) -> str:
    # OTEL_EXPORTER_OTLP_ENDPOINT is the base URL; a signal's own URL is base + /v1/<signal> (the OTLP spec).
    return f"{endpoint.rstrip('/')}/v1/{signal}"


def _admin_server(host: str, port: int, health: Health | None) -> AdminServer:
    # prometheus_client's app serves its default registry, which the PrometheusMetricReader below feeds.
    from prometheus_client import make_wsgi_app

    try:
        return serve_admin(host, port, admin_app(make_wsgi_app(), health))
    except OSError as err:
        raise TelemetryError(
            f"the Prometheus endpoint cannot listen on {host}:{port} ({err}): set QU_METRICS_PORT to a free port, "
            "or 0 for none"
        ) from err


def _prometheus_reader() -> MetricReader:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    return PrometheusMetricReader()
