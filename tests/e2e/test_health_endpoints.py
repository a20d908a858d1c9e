"""The worker's and the refresher's probes on the real stack: ``/readyz`` and ``/livez`` answer on the same port as
``/metrics`` (what a pod's probes and its PodMonitor both name), and the heartbeat really comes from the running
process's event loop."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.stack.embedded import EmbeddedStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

OWN_METRIC = {"worker-0": "qu_worker_circuit_state", "refresher": "qu_refresher_records"}
PROCESSES = tuple(OWN_METRIC)


def get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.headers.get("Content-Type", ""), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def until_ready(port: int, timeout_s: float = 60.0) -> dict[str, Any]:
    # The session's stack may just have restarted a process (tests/e2e/test_faults.py): give it time to get ready.
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = get(port, "/readyz")
        if status == 200 or time.monotonic() >= deadline:
            assert status == 200, body
            detail: dict[str, Any] = json.loads(body)
            return detail
        time.sleep(0.5)


def until_beating(port: int, timeout_s: float = 30.0) -> dict[str, Any]:
    # Faust starts its timers (the worker's heartbeat) once the worker is fully started, a few seconds after its
    # handler is ready; until the first beat /livez is OK with no beats (see services/health.py).
    deadline = time.monotonic() + timeout_s
    while True:
        status, _, body = get(port, "/livez")
        assert status == 200, body
        detail: dict[str, Any] = json.loads(body)
        assert detail["ok"] is True
        if detail["beats"] >= 1:
            return detail
        assert time.monotonic() < deadline, f"no heartbeat within {timeout_s:.0f} s: {detail}"
        time.sleep(0.5)


@pytest.mark.parametrize("name", PROCESSES)
def test_ready_and_live_beside_metrics(embedded_stack: EmbeddedStack, name: str) -> None:
    port = embedded_stack.metrics_ports()[name]
    ready = until_ready(port)
    check = "handler" if name.startswith("worker") else "consumer"
    assert ready == {"ok": True, "checks": {check: "ready"}}

    first = until_beating(port)
    # The event loop beats about once a second: a second look two seconds later has seen more beats.
    time.sleep(2.2)
    status, content_type, body = get(port, "/livez")
    assert (status, content_type) == (200, "application/json")
    second = json.loads(body)
    assert second["ok"] is True
    assert second["beats"] >= first["beats"] + 1
    assert second["last_beat_s_ago"] < 5

    status, _, body = get(port, "/metrics")
    assert status == 200
    families = {family.name for family in text_string_to_metric_families(body.decode())}
    # An observable instrument each process always reports (the worker's once its handler is built).
    assert OWN_METRIC[name] in families, sorted(families)

    assert get(port, "/nothing-here")[0] == 404
