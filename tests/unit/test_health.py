"""services/health.py: liveness from the event loop's heartbeat, readiness from named checks; and the admin
server (services/telemetry/admin_server.py) that serves them beside /metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app

from services.cache.refresher import CONSUMER_CHECK, HeadTagRefresher
from services.health import Health, heartbeat
from services.settings import Settings
from services.telemetry.admin_server import admin_app, serve_admin
from services.telemetry.setup import TelemetryError, configure_telemetry


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def health(*checks: str, stall_s: float = 30.0) -> tuple[Health, FakeClock]:
    clock = FakeClock()
    return Health(checks, stall_s=stall_s, clock=clock), clock


# --- liveness ------------------------------------------------------------------------------------


def test_live_before_the_first_beat_however_long_start_up_takes() -> None:
    h, clock = health("handler")
    clock.now += 3600
    probe = h.liveness()
    assert probe.ok
    assert probe.detail["beats"] == 0
    assert probe.detail["last_beat_s_ago"] is None


def test_a_heartbeat_silent_past_the_stall_limit_is_not_live_and_a_beat_revives_it() -> None:
    h, clock = health("handler", stall_s=30)
    h.beat()
    clock.now += 30
    assert h.liveness().ok  # at the limit: still live
    clock.now += 0.5
    probe = h.liveness()
    assert not probe.ok
    assert probe.detail["ok"] is False
    assert probe.detail["last_beat_s_ago"] == 30.5
    assert "30.5 s" in probe.detail["reason"] and "limit 30 s" in probe.detail["reason"]
    h.beat()
    probe = h.liveness()
    assert probe.ok and probe.detail["beats"] == 2 and probe.detail["last_beat_s_ago"] == 0


def test_liveness_ignores_readiness() -> None:
    h, _ = health("handler")
    h.beat()
    h.unready("handler", "Redis is down")
    h.stopping()
    assert h.liveness().ok


def test_the_stall_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="stall_s"):
        Health(("handler",), stall_s=0)


# --- readiness -----------------------------------------------------------------------------------


def test_every_declared_check_starts_unready() -> None:
    h, _ = health("handler", "consumer")
    probe = h.readiness()
    assert not probe.ok
    assert probe.detail == {
        "ok": False,
        "checks": {"handler": "starting", "consumer": "starting"},
        "failing": ["consumer", "handler"],
    }


def test_ready_only_when_every_check_is_ready() -> None:
    h, _ = health("handler", "consumer")
    h.ready("handler")
    probe = h.readiness()
    assert not probe.ok and probe.detail["failing"] == ["consumer"]
    h.ready("consumer")
    probe = h.readiness()
    assert probe.ok
    assert probe.detail == {"ok": True, "checks": {"handler": "ready", "consumer": "ready"}}


def test_an_unready_check_names_its_reason_and_can_recover() -> None:
    h, _ = health("handler", "consumer")
    h.ready("handler")
    h.ready("consumer")
    h.unready("consumer", "the refresher is closed")
    probe = h.readiness()
    assert not probe.ok
    assert probe.detail["checks"]["consumer"] == "the refresher is closed"
    assert probe.detail["failing"] == ["consumer"]
    h.ready("consumer")
    assert h.readiness().ok


def test_a_stopping_process_is_never_ready_again() -> None:
    h, _ = health("handler")
    h.ready("handler")
    h.stopping("the worker is stopping")
    h.stopping("a second reason is not recorded")
    h.ready("handler")
    probe = h.readiness()
    assert not probe.ok
    assert probe.detail["stopping"] == "the worker is stopping"
    assert "failing" not in probe.detail


def test_an_undeclared_check_is_an_error() -> None:
    h, _ = health("handler")
    with pytest.raises(ValueError, match="handlr"):
        h.ready("handlr")
    with pytest.raises(ValueError, match="handlr"):
        h.unready("handlr", "typo")


def test_the_heartbeat_task_beats_from_the_loop() -> None:
    h = Health(("handler",), stall_s=30)

    async def run() -> None:
        task = asyncio.create_task(heartbeat(h, every_s=0.01))
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(run())
    assert h.liveness().detail["beats"] >= 3


# --- the refresher's check -----------------------------------------------------------------------


class _FakeConsumer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.closed = False

    def subscribe(self, topics: list[str], **kwargs: Any) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        return []

    def close(self) -> None:
        self.closed = True


def test_the_refresher_is_ready_once_its_consumer_polls_and_unready_once_closed() -> None:
    h = Health((CONSUMER_CHECK,), stall_s=30)
    refresher = HeadTagRefresher(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g"},
        None,  # type: ignore[arg-type]  # not reached: nothing is written
        admission=None,  # type: ignore[arg-type]
        writer=object(),  # type: ignore[arg-type]
        consumer_factory=_FakeConsumer,  # type: ignore[arg-type]
        health=h,
    )
    assert not h.readiness().ok
    asyncio.run(refresher._consume())
    assert h.readiness().ok
    refresher.close()
    probe = h.readiness()
    assert not probe.ok and probe.detail["checks"][CONSUMER_CHECK] == "the refresher is closed"


# --- the admin WSGI app --------------------------------------------------------------------------


def call(app: Callable[..., Iterable[bytes]], path: str) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "wsgi.url_scheme": "http"}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def metrics_app() -> Callable[..., Iterable[bytes]]:
    registry = CollectorRegistry()
    Counter("qu_test_things", "things", registry=registry).inc(3)
    return make_wsgi_app(registry)


def test_metrics_go_to_prometheus_and_the_probes_to_health() -> None:
    h, clock = health("handler")
    app = admin_app(metrics_app(), h)

    status, headers, body = call(app, "/metrics")
    assert status.startswith("200") and "qu_test_things_total 3.0" in body.decode()

    status, headers, body = call(app, "/readyz")
    assert status == "503 Service Unavailable"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["failing"] == ["handler"]
    h.ready("handler")
    status, _, body = call(app, "/readyz")
    assert status == "200 OK" and json.loads(body)["ok"] is True

    h.beat()
    status, _, body = call(app, "/livez")
    assert status == "200 OK" and json.loads(body)["beats"] == 1
    clock.now += 31
    status, _, body = call(app, "/livez")
    assert status == "503 Service Unavailable"
    assert "has not beaten" in json.loads(body)["reason"]


def test_other_paths_are_not_found() -> None:
    app = admin_app(metrics_app(), health("handler")[0])
    for path in ("/", "/healthz", "/metrics/x", "/readyz/"):
        status, _, _ = call(app, path)
        assert status == "404 Not Found", path


def test_without_health_the_probes_are_not_found_and_metrics_still_served() -> None:
    app = admin_app(metrics_app(), None)
    assert call(app, "/livez")[0] == "404 Not Found"
    assert call(app, "/readyz")[0] == "404 Not Found"
    assert call(app, "/metrics")[0].startswith("200")


# --- the server, over HTTP -----------------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_blocked_event_loop_fails_liveness_over_http() -> None:
    """The design in one test: the loop beats, the server answers from its own thread, so a loop that blocks
    (here a synchronous sleep in a coroutine) turns /livez into a 503 while it is blocked."""
    h = Health(("handler",), stall_s=0.3)
    server = serve_admin("127.0.0.1", 0, admin_app(metrics_app(), h))
    seen: dict[str, int] = {}

    def probe_while_blocked() -> None:
        time.sleep(0.8)  # the loop has been blocked for about 0.7 s by now
        seen["blocked"] = get(server.port, "/livez")[0]

    async def run() -> None:
        task = asyncio.create_task(heartbeat(h, every_s=0.05))
        await asyncio.sleep(0.2)
        seen["beating"] = get(server.port, "/livez")[0]  # blocks the loop for a moment only
        prober = threading.Thread(target=probe_while_blocked)
        prober.start()
        time.sleep(1.2)  # the point: a blocked loop
        prober.join()
        await asyncio.sleep(0.2)
        seen["recovered"] = get(server.port, "/livez")[0]
        task.cancel()

    try:
        asyncio.run(run())
    finally:
        server.close()
    assert seen == {"beating": 200, "blocked": 503, "recovered": 200}


def test_configure_telemetry_serves_the_probes_beside_metrics_and_names_the_setting_when_taken() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = Health(("handler",), stall_s=30)
    settings = Settings(metrics_port=port, metrics_host="127.0.0.1")
    telemetry = configure_telemetry(settings, "qu-test", instrument_redis=False, global_providers=False, health=h)
    try:
        assert telemetry.metrics_address == f"127.0.0.1:{port}"
        assert get(port, "/readyz")[0] == 503
        h.ready("handler")
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/livez")[0] == 200
        status, body = get(port, "/metrics")
        assert status == 200 and b"# TYPE" in body
        with pytest.raises(TelemetryError, match="QU_METRICS_PORT"):
            configure_telemetry(settings, "qu-test", instrument_redis=False, global_providers=False, health=h)
    finally:
        telemetry.shutdown()
    with socket.socket() as s:
        # Shut down: nothing listens on the port any more (SO_REUSEADDR, as any server: its closed connections
        # may linger in TIME_WAIT, a listener may not).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# --- the worker's wiring -------------------------------------------------------------------------


def test_the_worker_is_not_ready_once_faust_signals_its_shutdown() -> None:
    # In a child: importing streams.app builds the Faust app and installs process-wide hooks.
    script = (
        "import asyncio, json\n"
        "from streams.app import HANDLER_CHECK, app, health\n"
        "health.ready(HANDLER_CHECK)\n"
        "before = health.readiness().ok\n"
        "asyncio.run(app.on_before_shutdown.send())\n"
        "print(json.dumps([before, health.readiness().detail]))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert before is True
    assert after == {"ok": False, "checks": {"handler": "ready"}, "stopping": "the worker is stopping"}
