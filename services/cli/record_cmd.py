"""``qu record``: the traffic recorder, search events and served annotations into the archive (`qu replay`'s input)."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from services.cli.context import reported_errors, settings_from
from services.replay.recorder import RECORDER_GROUP, TrafficRecorder
from services.telemetry.logs import configure_logging

log = logging.getLogger("qu.recorder")


def record(ctx: typer.Context) -> None:
    """Archive qu.search-events.v1 and qu.query-annotations.v1 as Parquet under QU_ARCHIVE_DIR (default
    STATE_DIR/archive), until SIGTERM or Ctrl-C. `qu up` starts it when QU_RECORD_TRAFFIC=true."""
    settings = settings_from(ctx)
    configure_logging("INFO", json=settings.log_format == "json")
    archive = settings.resolved_archive_dir
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    with reported_errors():
        archive.mkdir(parents=True, exist_ok=True)
        recorder = TrafficRecorder({"bootstrap.servers": settings.kafka_bootstrap, "group.id": RECORDER_GROUP}, archive)
        log.info("recording %s into %s", settings.kafka_bootstrap, archive)
        recorder.run_forever(stop)
        counters = recorder.counters
        log.info(
            "recorder stopped: %d records in %d files (%d without an event id)",
            counters.records,
            counters.files,
            counters.without_event_id,
        )
