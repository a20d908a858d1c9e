"""``python -m streams worker ...``: the Faust worker's command line (what `qu up` starts)."""

import asyncio

import uvloop

# uvloop runs the worker's event loops: 7-19% less worker CPU per event on 2 cores (docs/BENCHMARKS.md). Set
# before the app module is imported, so that every loop Faust and mode make comes from this policy.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from services.telemetry.logs import instrument_log_records  # noqa: E402
from services.telemetry.setup import configure_telemetry  # noqa: E402
from streams.app import app, settings  # noqa: E402  (after the policy, on purpose)

# The entrypoint configures telemetry (traces, metrics, the Prometheus endpoint); the app only uses the API.
telemetry = configure_telemetry(settings, "qu-worker")
instrument_log_records()  # Faust applies the app's logging_config (JSON lines) when the worker starts
try:
    app.main()
finally:
    telemetry.shutdown()
