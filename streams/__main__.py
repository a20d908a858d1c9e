"""``python -m streams worker ...``: the Faust worker's command line (what `qu up` starts)."""

import asyncio

import uvloop

# uvloop runs the worker's event loops: 7-19% less worker CPU per event on 2 cores (docs/BENCHMARKS.md). Set
# before the app module is imported, so that every loop Faust and mode make comes from this policy.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

from streams.app import app  # noqa: E402  (after the policy, on purpose)

app.main()
