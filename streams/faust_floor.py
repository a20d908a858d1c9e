"""The Faust floor: the worker's stream machinery with no handler, for `python -m services.bench.faust_floor`.

The same agent shape as streams/app.py (noack_take batches, a send per record, acknowledgement after
delivery) copying FLOOR_IN to FLOOR_OUT, so its CPU per event is what Faust and its transport cost before
the engine does anything. Configured from the environment by the runner; not part of the engine.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

import faust

from streams.batching import BATCH_MAX, BATCH_WITHIN_S, PRODUCER_MAX_BATCH_BYTES

app = faust.App(
    f"qu-faust-floor-{os.environ.get('FLOOR_TAG', 'x')}",
    broker=f"{os.environ.get('FLOOR_TRANSPORT', 'kafka')}://{os.environ.get('FLOOR_BOOTSTRAP', '127.0.0.1:9092')}",
    broker_session_timeout=6,
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,
    topic_disable_leader=True,
    web_enabled=False,
    producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
    store="memory://",
)


def _raw_topic(name: str) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


source = _raw_topic(os.environ.get("FLOOR_IN", "floor-in"))
sink = _raw_topic(os.environ.get("FLOOR_OUT", "floor-out"))


@app.agent(source)
async def copy(stream: faust.StreamT[bytes]) -> None:
    async for batch in cast(faust.Stream[bytes], stream).noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
        events = cast(list[faust.EventT[bytes]], batch)
        sent = [await sink.send(key=e.message.key, value=e.value, headers=e.message.headers) for e in events]
        await asyncio.gather(*sent)
        for event in events:
            await stream.ack(event)


if __name__ == "__main__":
    app.main()
