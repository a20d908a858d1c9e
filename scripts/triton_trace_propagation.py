"""How many traced requests Triton joins to their trace, over gRPC and over HTTP, on a running stack.

    qu up                                   # any stack with tracing on (QU_TRITON_TRACING, the default)
    .venv/bin/python scripts/triton_trace_propagation.py --requests 300

Each request carries its own sampled ``traceparent`` (one request after another, alternating the
two protocols); a request is joined when Triton's ``InferRequest`` span with that trace id reaches the
stack's trace store. Triton 2.51's gRPC frontend reads the ``traceparent`` metadata value as a C string
(``GrpcServerCarrier::Get`` returns ``it->second.data()``, and gRPC's values are not NUL-terminated), so
whatever byte follows the value decides whether the context parses; its HTTP frontend copies headers
NUL-terminated. Figures and the upstream fix: docs/OBSERVABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid

import numpy as np

from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.student.contract import INPUT, OUTPUT
from services.telemetry.span_store import read_spans


async def send(stack: EmbeddedStack, model: str, requests: int) -> dict[str, list[str]]:
    from tritonclient.grpc import aio as grpc_aio
    from tritonclient.http import aio as http_aio

    endpoints = stack.endpoints()
    over_grpc = grpc_aio.InferenceServerClient(endpoints["triton_grpc"])
    over_http = http_aio.InferenceServerClient(endpoints["triton_http"])
    sent: dict[str, list[str]] = {"grpc": [], "http": []}
    try:
        for i in range(requests):
            protocol = "grpc" if i % 2 == 0 else "http"
            trace_id = uuid.uuid4().hex
            headers = {"traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"}
            query = np.array([[f"oat milk {i}".encode()]], dtype=np.object_)
            if protocol == "grpc":
                g_input = grpc_aio.InferInput(INPUT, [1, 1], "BYTES")
                g_input.set_data_from_numpy(query)
                outputs = [grpc_aio.InferRequestedOutput(OUTPUT)]
                await over_grpc.infer(model, [g_input], outputs=outputs, headers=headers, client_timeout=60)
            else:
                h_input = http_aio.InferInput(INPUT, [1, 1], "BYTES")
                h_input.set_data_from_numpy(query)
                await over_http.infer(
                    model, [h_input], outputs=[http_aio.InferRequestedOutput(OUTPUT)], headers=headers
                )
            sent[protocol].append(trace_id)
    finally:
        await over_grpc.close()
        await over_http.close()
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="traced requests in all, half over each protocol")
    parser.add_argument(
        "--wait", type=float, default=10.0, help="seconds at most for Triton's spans to reach the trace store"
    )
    args = parser.parse_args()
    settings = Settings()
    stack = EmbeddedStack(settings)
    if stack.state() is None:
        print(f"no stack runs under {settings.state_dir}: `qu up` first", file=sys.stderr)
        return 2
    sent = asyncio.run(send(stack, settings.student_model, args.requests))
    wanted = {t for trace_ids in sent.values() for t in trace_ids}
    deadline = time.monotonic() + args.wait
    while True:  # until every request is joined, or the wait is over (a lost context never arrives)
        joined = {s.trace_id for s in read_spans(stack.traces_dir) if s.name == "InferRequest"} & wanted
        if joined == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for protocol, trace_ids in sent.items():
        lost = sum(t not in joined for t in trace_ids)
        print(f"{protocol}: {len(trace_ids)} traced requests, {lost} with no Triton span ({lost / len(trace_ids):.1%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
