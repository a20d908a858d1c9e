"""`qu teacher run` is a job with no endpoint to scrape: its counters go over OTLP (OTEL_EXPORTER_OTLP_ENDPOINT),
flushed when the run ends. Received here by a real OTLP/HTTP receiver (OtelTap, as the trace store uses)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from services.stack.ports import free_port
from tests.conftest import CliFactory
from tests.fixtures.loop_thread import LoopThread

pytestmark = [pytest.mark.integration]


class MetricsReceiver:
    """An OtelTap OTLP/HTTP receiver on its own loop, keeping every metric data point it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.points: list[tuple[str, dict[str, Any], float]] = []
        self._thread = LoopThread("OTLP metrics receiver")
        self._receiver: Any = None
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> MetricsReceiver:
        from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

        async def setup() -> None:
            self._receiver = await OtelTapHttpProtobufReceiver(
                OtelTapHttpProtobufReceiverSettings(http_port=self.port)
            ).start()
            self._task = asyncio.create_task(self._keep())
            await asyncio.sleep(0)

        async def cleanup() -> None:
            if self._task is not None:
                self._task.cancel()
            await self._receiver.stop()

        self._thread.start(setup, cleanup)
        return self

    async def _keep(self) -> None:
        async for metric in self._receiver.stream_metrics():
            for point in metric.sum.data_points:
                attributes = {kv.key: kv.value.string_value for kv in point.attributes}
                value = point.as_double if point.HasField("as_double") else point.as_int
                self.points.append((metric.name, attributes, value))

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()


def test_a_teacher_runs_counters_reach_an_otlp_collector(
    cli_with_env: CliFactory, student_catalog_dir: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "queries.txt"
    queries.write_text("whole milk\nbananas\nbread no gluten\n")
    with MetricsReceiver() as receiver:
        cli = cli_with_env(
            {
                "QU_STATE_DIR": str(tmp_path / "state"),
                "QU_CATALOG_DIR": str(student_catalog_dir),
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            }
        )
        result = cli("teacher", "run", "--queries", queries, "--no-publish", "--task", "srl", "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        deadline = time.monotonic() + 10  # the receiver hands over what it decoded a moment after the request
        while not any(name == "qu.teacher.queries" for name, _, _ in receiver.points) and time.monotonic() < deadline:
            time.sleep(0.1)
    received = {(name, tuple(sorted(attrs.items()))): value for name, attrs, value in receiver.points}
    assert received[("qu.teacher.queries", ())] == summary["queries"] == 3
    answered = summary["tasks"]["srl"].get("answered", 0)
    assert received[("qu.teacher.calls", (("qu.task", "srl"), ("qu.teacher.status", "answered")))] == answered
