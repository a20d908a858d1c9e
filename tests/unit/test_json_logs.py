"""The long-running processes' log lines: JSON objects with the span's ids inside a span, none outside."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from opentelemetry.instrumentation.logging import LoggingInstrumentor
from opentelemetry.sdk.trace import TracerProvider

from services.telemetry.logs import instrument_log_records, logging_config


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    config = logging_config("INFO")
    config["handlers"]["stderr"]["stream"] = stream
    config["root"] = {"level": "INFO", "handlers": []}
    config["loggers"] = {"qu.test": {"level": "INFO", "handlers": ["stderr"], "propagate": False}}
    instrument_log_records()
    logging.config.dictConfig(config)
    try:
        yield stream
    finally:
        LoggingInstrumentor().uninstrument()
        logging.getLogger("qu.test").handlers.clear()


def test_a_line_inside_a_span_carries_its_ids_and_one_outside_carries_none(lines: io.StringIO) -> None:
    log = logging.getLogger("qu.test")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("process qu.search-events.v1") as span:
        log.warning("student unavailable: %s", "timeout", extra={"qu_event_id": "e1"})
    log.info("outside")
    inside, outside = (json.loads(line) for line in lines.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x") and inside["span_id"] == format(
        context.span_id, "016x"
    )
    assert inside["message"] == "student unavailable: timeout" and inside["level"] == "WARNING"
    assert inside["logger"] == "qu.test" and inside["qu_event_id"] == "e1" and "time" in inside
    assert outside["message"] == "outside" and "trace_id" not in outside and "span_id" not in outside
    assert not any(key.startswith("otel") for key in (*inside, *outside))


def test_text_is_one_setting_away() -> None:
    formatter = logging_config(json=False)["formatters"]["default"]
    assert formatter == {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
