"""Reading the head-tag cache: :class:`HeadTagStore` (one round trip per batch) and
:class:`BatchingHeadTagLookup` (concurrent single lookups gathered into one batch, or a caller's batch).

How a batch finds the active run: the store remembers the run id it saw last and sends, in one
pipeline (one round trip), ``GET current`` and ``MGET`` of the batch's keys under that run. When the
pointer still names that run, the answer is used as is; when it moved (a new run was activated), the
store adopts the new run and sends one more MGET. So a swap is seen by the very next batch, the
steady state costs one round trip with no Lua, and results always come from one run only: a
pointer cached for a time would add a staleness window, and a Lua script would add a script cache
that a restarted Redis forgets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from services.cache.errors import CacheError, CacheUnavailable
from services.cache.keys import CachedHeadTags, HeadTagKeys, decode_entry
from services.circuit_breaker import CircuitBreaker, CircuitOpen
from services.domain import SCHEMA_VERSION

log = logging.getLogger(__name__)

# Decoded entries kept per store (see HeadTagStore._decoded): the head of the traffic, a few MiB.
DECODED_MAX = 4096
# Keys per MGET of get_many: one MGET for a worker's batch (streams.app.BATCH_MAX = 256) with room to spare,
# small enough that one command does not hold Redis (single-threaded) for long.
MGET_MAX = 1024
# Errors that mean "Redis is not answering" rather than "we asked something wrong".
UNAVAILABLE_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def connect_head_tag_cache(
    url: str,
    *,
    password: SecretStr | None = None,
    socket_timeout_s: float = 0.25,
    connect_timeout_s: float = 0.25,
) -> Redis:
    """A client for the real-time path: it fails within ~the socket timeout instead of hanging.
    ``password`` (``Settings.resolved_redis_password()``) is sent with AUTH on every new connection.

    One immediate reconnect on a connection error (not on a timeout) replaces a pooled connection
    that a Redis restart closed, so the first lookup after a restart succeeds; redis-py's default
    of three retries with backoff would instead stretch a real outage to seconds per lookup.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client: Redis = Redis.from_url(
        url,
        password=password.get_secret_value() if password is not None else None,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=retry,
    )
    return client


def redis_address(redis: Redis) -> str:
    kwargs: dict[str, Any] = redis.connection_pool.connection_kwargs
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def cache_error(redis: Redis, what: str, exc: Exception, *, reading: bool = False) -> CacheError:
    """The engine's error for a failed Redis call; the message names the server and the command.

    On the read path every failure is CacheUnavailable: whatever went wrong, the caller's only
    useful move is to answer without the cache, and the message still says what went wrong.
    """
    if isinstance(exc, AuthenticationError):  # a ConnectionError to redis-py, but no outage: a setting is wrong
        return CacheUnavailable(
            f"Redis at {redis_address(redis)} refused this client ({what}): {exc}; set QU_REDIS_PASSWORD to its "
            "password (the embedded stack's is in STATE_DIR/stack/redis/password)"
        )
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return CacheUnavailable(f"Redis at {redis_address(redis)} is unavailable ({what}): {exc}")
    error = CacheUnavailable if reading else CacheError
    return error(f"Redis at {redis_address(redis)} failed {what}: {exc}")


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(slots=True)
class StoreStats:
    batches: int = 0
    queries: int = 0
    hits: int = 0
    pointer_moves: int = 0
    corrupt_entries: int = 0


class HeadTagStore:
    """Batch lookups of cached head tags. Cheap to construct: it only keeps the client and a run id.

    ``redis`` must return bytes (``decode_responses=False``): values are protobuf. Use
    :func:`connect_head_tag_cache` for small timeouts. The store survives Redis outages: each call
    raises :class:`CacheUnavailable` while Redis is away and works again once it is back. With a
    ``breaker``, lookups fail at once while Redis keeps failing (one socket timeout per the breaker's
    ``open_s``, not one per batch), and its probe finds Redis back.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        schema_version: int = SCHEMA_VERSION,
        decoded_max: int = DECODED_MAX,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("HeadTagStore needs a Redis client with decode_responses=False: values are protobuf")
        if decoded_max < 0:
            raise ValueError(f"decoded_max must be >= 0, got {decoded_max}")
        self._redis = redis
        self._keys = HeadTagKeys(schema_version)
        self._run: str | None = None
        # Stored value -> its decoded entry. Keyed by the bytes themselves: a value holds its run id and query,
        # so another run or a rewritten entry is other bytes and can never be served a stale decode. The
        # entries are frozen, and the annotate handler builds new objects from them instead of editing them.
        self._decoded: dict[bytes, CachedHeadTags] = {}
        self._decoded_max = decoded_max
        self._breaker = breaker
        self.stats = StoreStats()

    @property
    def keys(self) -> HeadTagKeys:
        return self._keys

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, "PING", exc, reading=True) from exc

    async def active_run(self) -> str | None:
        """The run id readers use now (one GET), or None before any run was activated."""
        try:
            return _text(await self._redis.get(self._keys.current))
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, "GET current", exc, reading=True) from exc

    async def get_many(self, normalized_queries: Sequence[str]) -> list[CachedHeadTags | None]:
        """One answer per query, in order: the active run's entry, or None when it has none."""
        queries = list(normalized_queries)
        if not queries:
            return []
        breaker = self._breaker
        if breaker is not None:
            try:
                breaker.check()
            except CircuitOpen as err:
                raise CacheUnavailable(f"Redis at {redis_address(self._redis)}: {err}") from None
        try:
            values = await self._fetch(queries)
        except (RedisError, OSError) as exc:
            error = cache_error(self._redis, f"MGET of {len(queries)} keys", exc, reading=True)
            if breaker is not None:
                breaker.failed(error)
            raise error from exc
        if breaker is not None:
            breaker.succeeded()
        self.stats.batches += 1
        self.stats.queries += len(queries)
        out = [self._decode(q, v) for q, v in zip(queries, values, strict=True)]
        self.stats.hits += sum(1 for r in out if r is not None)
        return out

    async def _fetch(self, queries: list[str]) -> list[bytes | None]:
        run = self._run
        if run is not None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self._keys.current)
            pipe.mget(self._keys.entries(run, queries))
            pointer, values = await pipe.execute()
            current = _text(pointer)
            if current == run:
                return list(values)
        else:
            current = _text(await self._redis.get(self._keys.current))
        if current != run:
            self.stats.pointer_moves += 1
            self._run = current
        if current is None:
            return [None] * len(queries)
        try:
            keys = self._keys.entries(current, queries)
        except ValueError as exc:  # someone wrote a malformed run id into the pointer
            raise CacheUnavailable(f"the pointer {self._keys.current} holds an invalid run id: {exc}") from exc
        # The client returns bytes (checked in __init__); redis-py's types also allow str.
        return cast(list[bytes | None], await self._redis.mget(keys))

    def _decode(self, query: str, value: bytes | None) -> CachedHeadTags | None:
        if value is None:
            return None
        entry = self._decoded.get(value)
        if entry is None:
            try:
                entry = decode_entry(value)
            except ValueError as exc:
                # A bad value is a miss, not an outage: the student answers and the next run overwrites it.
                self.stats.corrupt_entries += 1
                log.warning("head-tag cache: undecodable entry for %r in run %s: %s", query, self._run, exc)
                return None
            if self._decoded_max:
                if len(self._decoded) >= self._decoded_max:
                    # Oldest first (dicts keep insertion order): a popular entry that goes is decoded once more.
                    del self._decoded[next(iter(self._decoded))]
                self._decoded[value] = entry
        if entry.normalized_query != query:
            self.stats.corrupt_entries += 1
            log.warning("head-tag cache: entry under %r is for %r; ignored", query, entry.normalized_query)
            return None
        return entry


class BatchingHeadTagLookup:
    """``await lookup.get(q)`` from many tasks; the queries asked within ``window_ms`` (or until
    ``max_batch`` distinct ones wait) go to Redis as one batch. A query asked twice in one window
    is fetched once. Errors of a batch (e.g. :class:`CacheUnavailable`) are raised to each caller.

    A caller that already holds a batch uses :meth:`get_many` instead: no window, no future per query."""

    def __init__(self, store: HeadTagStore, window_ms: float, max_batch: int, *, mget_max: int = MGET_MAX) -> None:
        if window_ms < 0 or max_batch < 1 or mget_max < 1:
            raise ValueError(
                f"window_ms must be >= 0, max_batch and mget_max >= 1, got {window_ms}, {max_batch} and {mget_max}"
            )
        self._store = store
        self._window_s = window_ms / 1000.0
        self._max_batch = max_batch
        self._mget_max = mget_max
        self._pending: dict[str, list[asyncio.Future[CachedHeadTags | None]]] = {}
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def get(self, normalized_query: str) -> CachedHeadTags | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CachedHeadTags | None] = loop.create_future()
        self._pending.setdefault(normalized_query, []).append(future)
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            # A zero window still gathers every get made in the same event-loop turn.
            self._timer = (
                loop.call_later(self._window_s, self._flush) if self._window_s > 0 else loop.call_soon(self._flush)
            )
        return await future

    async def get_many(self, normalized_queries: Sequence[str]) -> list[CachedHeadTags | None]:
        """One answer per query, in order, now: MGETs of at most ``mget_max`` keys, sent concurrently.

        Each MGET is answered from one run; a run swapped in between two of them can answer them
        from different runs (each answer is still one run's, as for two separate batches)."""
        queries = list(normalized_queries)
        if len(queries) <= self._mget_max:
            return await self._store.get_many(queries)
        chunks = [queries[i : i + self._mget_max] for i in range(0, len(queries), self._mget_max)]
        answers = await asyncio.gather(*(self._store.get_many(chunk) for chunk in chunks))
        return [answer for chunk in answers for answer in chunk]

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._in_flight.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, batch: dict[str, list[asyncio.Future[CachedHeadTags | None]]]) -> None:
        queries = list(batch)
        try:
            results = await self._store.get_many(queries)
        except Exception as exc:  # every waiter gets the batch's error; none is left hanging
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for query, result in zip(queries, results, strict=True):
            for future in batch[query]:
                if not future.done():  # a caller that was cancelled is skipped
                    future.set_result(result)

    async def aclose(self) -> None:
        """Send what is waiting and wait for the batches in flight."""
        self._flush()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
