"""``python -m streams worker ...``: the Faust worker's command line (what `qu up` starts)."""

import asyncio
import cProfile
import time

import uvloop

# uvloop runs the worker's event loops: 7-19% less worker CPU per event on 2 cores (docs/BENCHMARKS.md). Set
# before the app module is imported, so that every loop Faust and mode make comes from this policy.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from services.telemetry.logs import instrument_log_records  # noqa: E402
from services.telemetry.setup import configure_telemetry  # noqa: E402
from streams.app import app, health, settings  # noqa: E402  (after the policy, on purpose)

# The entrypoint configures telemetry (traces, metrics, the Prometheus endpoint with /livez and /readyz beside
# /metrics); the app only uses the API.
telemetry = configure_telemetry(settings, "qu-worker", health=health)
instrument_log_records()  # Faust applies the app's logging_config (JSON lines) when the worker starts
# QU_WORKER_PROFILE: the main thread (the event loop: agent, handler, Kafka clients) under cProfile, written at
# the end (services/bench/profile.py reads it). Whole and at once: stats in a temporary name, then renamed.
# The timer is the thread's CPU time: wall time would charge a function with the waits of a blocking call.
profiler = cProfile.Profile(time.thread_time) if settings.worker_profile else None
if profiler is not None:
    profiler.enable()
try:
    app.main()
finally:
    if profiler is not None and settings.worker_profile is not None:
        profiler.disable()
        staged = settings.worker_profile.with_name(settings.worker_profile.name + ".partial")
        profiler.dump_stats(staged)
        staged.replace(settings.worker_profile)
    telemetry.shutdown()
