"""The worker's profile for ``qu bench --profile``: where its main thread spends its time, by layer and by function.

The worker profiles itself when ``QU_WORKER_PROFILE`` names a file (``streams/__main__.py``: cProfile over
its main thread, the event loop that runs the agent, the handler and the Kafka clients' coroutines, timed
by the thread's CPU time, written when the worker stops). The consumer's fetching thread (Faust runs
aiokafka's consumer in a thread of its own) is not in it: ``qu bench`` reports the whole process's CPU.
cProfile slows what it watches, so the bench measures first and profiles
after, in a phase of its own: it restarts the worker with the setting, runs the workload unthrottled,
restarts it without, and summarizes the file here.
"""

from __future__ import annotations

import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

# Where a function's file lives says which layer it belongs to; the first match wins.
LAYERS: tuple[tuple[str, str], ...] = (
    ("/services/annotation/", "handler (services/annotation)"),
    ("/services/cache/", "head-tag cache client"),
    ("/services/student/", "student client"),
    ("/services/guardrails/", "guardrails"),
    ("/services/tagging/", "tagging"),
    ("/services/", "services (other)"),
    ("/streams/", "agent (streams)"),
    ("/faust/", "faust"),
    ("/mode/", "faust (mode)"),
    ("/aiokafka/", "aiokafka"),
    ("/redis/", "redis-py"),
    ("/grpc/", "grpc / tritonclient"),
    ("/tritonclient/", "grpc / tritonclient"),
    ("/opentelemetry/", "opentelemetry"),
    ("/asyncio/", "asyncio"),
    ("uvloop", "asyncio"),
    ("orjson", "serialization"),
    ("/google/protobuf/", "serialization"),
)


def layer_of(filename: str) -> str:
    for fragment, layer in LAYERS:
        if fragment in filename:
            return layer
    if filename.startswith("~") or filename.startswith("<"):
        return "builtins"
    if "/site-packages/" not in filename and "/lib/python3" in filename:
        return "python standard library"
    return "other libraries"


def summarize(path: Path, *, top: int = 15) -> dict[str, Any]:
    """Own (exclusive) time by layer, as shares of the whole, and the ``top`` functions by own time."""
    stats = pstats.Stats(str(path))
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    total = sum(own for _calls, _prim, own, _cum, _callers in raw.values()) or 1.0
    by_layer: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_calls, _prim, own, _cum, callers) in raw.items():
        layer = layer_of(filename)
        if layer != "builtins" or not callers:
            by_layer[layer] += own
            continue
        # A builtin (isinstance, len, dict.get) is charged to the layers that called it, by the time each caller
        # spent in it: "builtins" alone would say nothing about whose code is slow.
        for (caller_file, _caller_line, _caller_name), (_cc, _nc, in_it, _ct) in callers.items():
            by_layer[layer_of(caller_file)] += in_it
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    return {
        "profiled_s": round(total, 3),
        "layers": {layer: round(own / total, 4) for layer, own in sorted(by_layer.items(), key=lambda kv: -kv[1])},
        "top": [
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 4),
                "own_share": round(own / total, 4),
                "cumulative_s": round(cumulative, 4),
            }
            for (filename, line, name), (calls, _prim, own, cumulative, _callers) in ranked
        ],
    }


_ROOT = str(Path(__file__).resolve().parents[2]) + "/"  # the checkout: the engine's own files by their path in it


def _short(filename: str) -> str:
    if filename.startswith(_ROOT):
        return filename[len(_ROOT) :]
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename
