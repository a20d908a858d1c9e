"""Structured logs for the long-running processes (worker, refresher, trace store): one JSON object per line.

Each line has ``time``, ``level``, ``logger`` and ``message``, any ``extra`` fields, and — when it was
written inside a span — that span's ``trace_id`` and ``span_id`` (hex, as in every trace viewer and in
``qu trace``), so a log line leads to its trace and a trace to its lines. The ids come from
OpenTelemetry's logging instrumentation (a log-record factory); the JSON from python-json-logger.
``QU_LOG_FORMAT=text`` keeps the plain format for reading a log by eye.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from opentelemetry.instrumentation.logging import LoggingInstrumentor

# The instrumentation's record attributes, and the names they get in the JSON.
_IDS = {"otelTraceID": "trace_id", "otelSpanID": "span_id"}
_DROPPED = ("otelTraceSampled", "otelServiceName")


class _SpanIdsInsideSpans(logging.Filter):
    """Keeps ``trace_id``/``span_id`` on lines written inside a span; outside one the instrumentation writes "0"."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in _DROPPED:
            record.__dict__.pop(name, None)
        if getattr(record, "otelTraceID", "0") == "0":
            for name in _IDS:
                record.__dict__.pop(name, None)
        return True


def logging_config(level: str = "INFO", *, json: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for one process: everything to stderr, as JSON lines or as text."""
    formatter: dict[str, Any] = (
        {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger", **_IDS},
        }
        if json
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"span_ids": {"()": _SpanIdsInsideSpans}},
        "formatters": {"default": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["span_ids"],
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Entrypoints only: trace ids on every log record, then the handlers of :func:`logging_config`."""
    instrument_log_records()
    logging.config.dictConfig(logging_config(level, json=json))


def instrument_log_records() -> None:
    """Put the current span's ids on every log record (no OpenTelemetry log export: the lines are the logs)."""
    instrumentor = LoggingInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(inject_trace_context=True, enable_log_auto_instrumentation=False)
