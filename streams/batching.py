"""How the worker's agent batches: the worker (streams/app.py) and its Faust floor (streams/faust_floor.py)."""

# Under load a batch fills to BATCH_MAX and shares its Redis round trip, its student requests and its produce
# requests among more events: 256 instead of 64 measured +40-50% events/s at hit ratio 0.98 on 2 cores
# (docs/BENCHMARKS.md). Under light load BATCH_WITHIN_S closes a batch first, so latency does not change.
BATCH_MAX = 256
BATCH_WITHIN_S = 0.005
PRODUCER_MAX_BATCH_BYTES = 1_000_000  # under producer_max_request_size (1,000,000): one batch fits one request
