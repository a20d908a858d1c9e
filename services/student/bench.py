"""``qu student bench``: the student measured through Triton, the way the real-time path calls it.

Two phases over the same normalized queries:

* sequential: one request of one query at a time -> p50 / p99 per query at batch 1 (client to client);
* concurrent: ``concurrency`` callers each keep one single-query request in flight, so Triton's
  dynamic batcher merges them -> queries per second, with p50 / p99 under that load.

Every answer is parsed, and the versions that answered are reported, so a figure always names
the model version it measured.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from services.domain import Understanding
from services.errors import QuError

INPUT = "QUERY"
OUTPUT = "TAGS_JSON"


class StudentBenchError(QuError):
    """Triton refused or failed a benchmark request."""


def _request(client_module: Any, query: str) -> tuple[list[Any], list[Any]]:
    tensor = client_module.InferInput(INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[query.encode("utf-8")]], dtype=np.object_))
    return [tensor], [client_module.InferRequestedOutput(OUTPUT)]


def _understanding(result: Any) -> Understanding:
    raw = result.as_numpy(OUTPUT).reshape(-1)[0]
    return Understanding.from_json(orjson.loads(raw))


def _ms(samples: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1000, q)), 3) if samples else 0.0


def ask(grpc_url: str, model: str, queries: Sequence[str], *, timeout_s: float = 30.0) -> list[Understanding]:
    """The answers of ``model`` on Triton to ``queries`` (normalized), one request of one query each."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        out = []
        for query in queries:
            inputs, outputs = _request(grpcclient, query)
            try:
                result = client.infer(model, inputs, outputs=outputs, client_timeout=timeout_s)
            except Exception as err:  # tritonclient raises its own InferenceServerException and gRPC errors
                raise StudentBenchError(f"Triton on {grpc_url} did not answer {query!r} with {model}: {err}") from err
            out.append(_understanding(result))
        return out
    finally:
        client.close()


def _sequential(grpc_url: str, model: str, queries: Sequence[str], versions: Counter[str]) -> list[float]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    latencies: list[float] = []
    try:
        for query in queries:
            inputs, outputs = _request(grpcclient, query)
            start = time.perf_counter()
            result = client.infer(model, inputs, outputs=outputs)
            latencies.append(time.perf_counter() - start)
            versions[_understanding(result).version] += 1
    finally:
        client.close()
    return latencies


async def _concurrent(
    grpc_url: str, model: str, queries: Sequence[str], concurrency: int, versions: Counter[str]
) -> tuple[list[float], float]:
    import tritonclient.grpc.aio as aioclient

    client = aioclient.InferenceServerClient(grpc_url)
    latencies: list[float] = []
    position = 0

    async def caller() -> None:
        nonlocal position
        while position < len(queries):
            query = queries[position]
            position += 1
            inputs, outputs = _request(aioclient, query)
            start = time.perf_counter()
            result = await client.infer(model, inputs, outputs=outputs)
            latencies.append(time.perf_counter() - start)
            versions[_understanding(result).version] += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        await client.close()
    return latencies, elapsed


def bench_student(
    grpc_url: str, model: str, queries: Sequence[str], *, requests: int, concurrency: int, warmup: int = 50
) -> dict[str, Any]:
    """Sequential batch-1 latency and concurrent throughput of ``model`` over ``requests`` queries each."""
    if not queries:
        raise StudentBenchError("no queries to send")
    cycle = [queries[i % len(queries)] for i in range(requests)]
    versions: Counter[str] = Counter()
    try:
        _sequential(grpc_url, model, cycle[:warmup], Counter())
        sequential = _sequential(grpc_url, model, cycle, versions)
        loaded, elapsed = asyncio.run(_concurrent(grpc_url, model, cycle, concurrency, versions))
    except StudentBenchError:
        raise
    except Exception as err:  # gRPC / Triton errors: one line naming the server and model
        raise StudentBenchError(f"benchmarking {model} on Triton {grpc_url} failed: {err}") from err
    return {
        "model": model,
        "versions": dict(versions),
        "requests": requests,
        "batch1_p50_ms": _ms(sequential, 50),
        "batch1_p99_ms": _ms(sequential, 99),
        "concurrency": concurrency,
        "concurrent_queries_per_s": round(len(loaded) / elapsed, 1) if elapsed else 0.0,
        "concurrent_p50_ms": _ms(loaded, 50),
        "concurrent_p99_ms": _ms(loaded, 99),
    }
