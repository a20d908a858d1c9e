"""Triton's tracing seen from outside: its exporter says in triton.log, while Triton runs, when it cannot deliver
its spans; and ``scripts/triton_trace_propagation.py`` counts the traced requests Triton joins, per protocol.

The OpenTelemetry SDK inside Triton writes its errors to stdout, which is block-buffered into a file unless
the server is started line-buffered (services/stack/triton_server.py, ``line_buffered_stdout``): without it a
traced request whose spans never reach the trace store leaves triton.log silent until Triton exits.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.stack.ports import free_port
from services.stack.triton_server import line_buffered_stdout
from tests.fixtures.stack import environ_without_settings, settings_env
from tests.fixtures.triton import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXPORT_ERROR = "[OTLP HTTP Client]"
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "triton_trace_propagation.py"


def test_a_failed_span_export_is_in_tritons_log_while_it_runs(triton_server_factory: ServerFactory) -> None:
    # Over HTTP: Triton's gRPC frontend drops a few propagated contexts (docs/OBSERVABILITY.md), and an
    # untraced request exports nothing to fail.
    import tritonclient.http as httpclient

    assert line_buffered_stdout(), "coreutils' stdbuf is missing: Triton's exporter errors would stay unlogged"
    server = triton_server_factory()
    server.trace_url = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there: every export fails
    server.start()
    client = httpclient.InferenceServerClient(server.http_url)
    query = httpclient.InferInput("QUERY", [1, 1], "BYTES")
    query.set_data_from_numpy(np.array([[b"oat milk"]], dtype=np.object_))
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    try:
        client.infer("qu_student", [query], headers={"traceparent": traceparent})
    finally:
        client.close()
    deadline = time.monotonic() + 20  # the exporter tries within bsp_schedule_delay (0.5 s); a refused connect is fast
    logged: list[str] = []
    while not logged and time.monotonic() < deadline:
        logged = [line for line in server.log_file.read_text(errors="replace").splitlines() if EXPORT_ERROR in line]
        time.sleep(0.2)
    assert server.ready(), "Triton must still be serving: only its export failed"
    assert logged, f"Triton's failed span export is not in {server.log_file}:\n{server.log_tail()}"


def test_the_propagation_script_counts_tritons_joined_requests_per_protocol(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    env = environ_without_settings() | settings_env(stack_settings)
    command = [sys.executable, str(SCRIPT), "--requests", "20"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert set(lines) == {"grpc", "http"}
    assert lines["grpc"].startswith("10 traced requests, ") and lines["http"].startswith("10 traced requests, ")
    # Triton's HTTP frontend reads the traceparent whole: every traced request over HTTP joins its trace.
    assert lines["http"].startswith("10 traced requests, 0 with no Triton span"), lines["http"]
