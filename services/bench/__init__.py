"""``qu bench``: throughput and end-to-end latency of the real-time path, against a raw passthrough.

Modules: ``workload`` (events and the head-cache seed), ``probe`` (producing events, timing their
answers), ``passthrough`` (the yardstick, also run as its own process), ``runner`` (the phases),
``stats`` (percentiles and per-phase figures). Nothing is imported here, so that
``python -m services.bench.passthrough`` starts without loading the rest.
"""
