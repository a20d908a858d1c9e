"""Triton's own trace exporter says in triton.log, while Triton runs, when it cannot deliver its spans.

The OpenTelemetry SDK inside Triton writes its errors to stdout, which is block-buffered into a file unless
the server is started line-buffered (services/stack/triton_server.py, ``line_buffered_stdout``): without it a
traced request whose spans never reach the trace store leaves triton.log silent until Triton exits.
"""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from services.stack.ports import free_port
from services.stack.triton_server import line_buffered_stdout
from tests.fixtures.triton import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXPORT_ERROR = "[OTLP HTTP Client]"


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
