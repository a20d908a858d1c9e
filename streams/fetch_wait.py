"""aiokafka's fetch wait for the Faust worker: Faust hard-codes 1,500 ms, the worker uses ``FETCH_MAX_WAIT_MS``.

When a fetch finds no record, tansu answers only at the end of the fetch's wait even if records arrive
meanwhile, which adds up to the wait to an event's latency: a raw passthrough measured p50 / p99 24 / 67 ms
at 1,000 events/s with 50 ms, 199 / 782 ms with 1,500 ms. Kafka answers as soon as records arrive, so there
this costs only a few more idle fetches. Faust offers no setting for it, so the worker's transport builds
its consumer with this wait (:class:`Transport`); ``services/bench/passthrough.py`` uses the same value (a
test keeps the two equal).
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 50


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts (its Fetcher is built in start()), after this returns.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport, its consumer fetching with ``FETCH_MAX_WAIT_MS``."""

    Consumer = _Consumer
