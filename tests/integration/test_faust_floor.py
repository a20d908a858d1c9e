"""`qu bench --faust-floor` on a real broker: the worker's agent shape without its handler copies every record."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.bench.faust_floor import run_faust_floor

pytestmark = pytest.mark.integration


def test_the_floor_copies_every_record_and_reports_its_cpu_per_event(tmp_path: Path) -> None:
    (result,) = run_faust_floor(tmp_path, events=4000, transports=("kafka",), timeout_s=90)
    assert (result.copied, result.note) == (4000, ""), (tmp_path / "faust-floor-kafka.log").read_text()[-2000:]
    assert result.events_per_s and result.faust_cpu_us_per_event and result.broker_cpu_us_per_event
    assert result.faust_cpu_us_per_event > 0 and result.broker_cpu_us_per_event > 0
