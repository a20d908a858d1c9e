"""Writing the head-tag cache: a teacher run is written beside the active one, then activated at once.

Writes are idempotent (SET of a key, SADD to the run's index), so a refresher that redelivers a
batch after a crash writes the same state again. Activation is one Lua script: it compares the
run's index size with the run size the teacher announced and only then moves the pointer, so a
reader sees either the whole old run or the whole new one. The replaced run is marked retired and
its entries expire after a grace period that covers readers still finishing a batch under the old
run id.

Retired is not forever: teacher run ids hash the run's inputs, so switching a threshold X -> Y -> X
publishes run A again after B replaced it. The marker holds the creation time of the run that
retired A; a record of A created after that belongs to a new publication of A (its first entry
restarts A's index, so only the new publication counts), one created before it is a late copy of
the old publication and stays refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from qu.v1 import head_tags_pb2
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.cache.errors import CacheError
from services.cache.head_tags import cache_error
from services.cache.keys import HeadTagKeys, check_run_id, encode_entry, entry_problem
from services.domain import SCHEMA_VERSION

log = logging.getLogger(__name__)

WRITE_CHUNK = 1000  # entries per pipeline: big enough to amortize the round trip, small enough not to stall Redis

# KEYS: current, index(run), retired(run), the active run's creation time, reopened(run). ARGV: run
# id, expected size, retired-marker TTL, the run key prefix ("qu:v1:run:"), the run's creation time
# (µs, 0 = unknown). A retired marker holds the creation time of the run that replaced this one
# (<= 1: unknown, or the "1" of engines before re-publication: never again); "reopened" holds the
# marker value after which the run's index was restarted by a new publication's entries. The
# previous run's marker key is built here from the pointer's value: fine on one Redis; a cluster
# would need the run keys under one hash tag anyway.
_ACTIVATE_LUA = """
local created = tonumber(ARGV[5])
local retired = redis.call('GET', KEYS[3])
if retired then
  local since = tonumber(retired) or 0
  local republished = since > 1 and created > since
  if republished and tonumber(ARGV[2]) == 0 then
    redis.call('DEL', KEYS[2])  -- an empty re-publication has no entries to restart the index
  elseif not republished or redis.call('GET', KEYS[5]) ~= retired then
    return {'retired', 0, redis.call('GET', KEYS[1])}
  end
end
local previous = redis.call('GET', KEYS[1])
local active_created = redis.call('GET', KEYS[4]) or '0'  -- kept a string: tostring() would round it
if previous ~= ARGV[1] and created > 0 and created < tonumber(active_created) then
  redis.call('SET', KEYS[3], active_created, 'EX', tonumber(ARGV[3]))
  return {'superseded', redis.call('SCARD', KEYS[2]), previous}
end
local present = redis.call('SCARD', KEYS[2])
if present ~= tonumber(ARGV[2]) then
  return {'count', present, previous}
end
if previous == ARGV[1] then
  return {'already_active', present, previous}
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[4], ARGV[5])
if previous then
  redis.call('SET', ARGV[4] .. previous .. ':retired', ARGV[5], 'EX', tonumber(ARGV[3]))
end
return {'activated', present, previous}
"""

# KEYS: retired(run), reopened(run), index(run). ARGV: the retired marker as the caller read it, the
# TTL of the reopened marker, the run's entry key prefix ("qu:v1:run:R:q:"). Restarts the run once
# per re-publication (the first batch of its entries): the old publication's index members would
# make SCARD count entries that are not there, and its entries (alive for the grace period) would be
# served beside the new ones. There is something to delete only within the grace period, at most
# one run's entries.
_REOPEN_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  local members = redis.call('SMEMBERS', KEYS[3])
  for i = 1, #members, 1000 do
    local keys = {}
    for j = i, math.min(i + 999, #members) do
      keys[#keys + 1] = ARGV[3] .. members[j]
    end
    redis.call('DEL', unpack(keys))
  end
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
end
return 1
"""


class RetiredRunError(CacheError):
    """Entries of a run that a newer run replaced, created before it did (a late copy, not a re-publication)."""


class ActivationStatus(StrEnum):
    ACTIVATED = "activated"
    ALREADY_ACTIVE = "already_active"
    COUNT_MISMATCH = "count"  # the run's index does not hold exactly the announced number of entries
    RETIRED = "retired"  # replaced by a newer run, and this run_end is not a later re-publication
    SUPERSEDED = "superseded"  # created before the active run (arrived late): retired now


@dataclass(frozen=True, slots=True)
class Activation:
    run_id: str
    status: ActivationStatus
    present: int  # distinct entries of the run found in Redis
    expected: int
    previous_run_id: str | None

    @property
    def active(self) -> bool:
        """True when readers now use ``run_id``."""
        return self.status in (ActivationStatus.ACTIVATED, ActivationStatus.ALREADY_ACTIVE)


class HeadTagWriter:
    """Writes runs and activates them. ``grace_s``: how long a replaced run stays readable;
    ``retired_ttl_s``: how long a replaced run id is remembered as never-again (cover any redelivery)."""

    def __init__(
        self,
        redis: Redis,
        *,
        schema_version: int = SCHEMA_VERSION,
        grace_s: int = 60,
        retired_ttl_s: int = 30 * 24 * 3600,
    ) -> None:
        self._redis = redis
        self._keys = HeadTagKeys(schema_version)
        self._grace_s = grace_s
        self._retired_ttl_s = retired_ttl_s
        self._activate = redis.register_script(_ACTIVATE_LUA)
        self._reopen = redis.register_script(_REOPEN_LUA)

    async def write_run_entries(self, run_id: str, entries: Sequence[head_tags_pb2.HeadTags], ttl_s: int) -> int:
        """Write ``entries`` into run ``run_id``'s namespace with a TTL; returns how many were written.

        Of a retired run, only entries created after it was retired are written (a re-publication);
        older ones are skipped, and RetiredRunError is raised when nothing is left. Raises ValueError
        for an entry of another run or one the cache cannot hold, CacheUnavailable when Redis is away
        (nothing is rolled back: writing the same entries again is harmless).
        """
        check_run_id(run_id)
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        for entry in entries:
            if entry.run_id != run_id:
                raise ValueError(f"entry {entry.normalized_query!r} belongs to run {entry.run_id!r}, not {run_id!r}")
            problem = entry_problem(entry)
            if problem is not None:
                raise ValueError(f"entry {entry.normalized_query!r} of run {run_id!r}: {problem}")
        if not entries:
            return 0
        index = self._keys.index(run_id)
        try:
            entries = await self._current_publication(run_id, entries)
            for start in range(0, len(entries), WRITE_CHUNK):
                chunk = entries[start : start + WRITE_CHUNK]
                queries = [e.normalized_query for e in chunk]
                pipe = self._redis.pipeline(transaction=False)
                for key, entry in zip(self._keys.entries(run_id, queries), chunk, strict=True):
                    pipe.set(key, encode_entry(entry), ex=ttl_s)
                pipe.sadd(index, *queries)
                # The index lives as long as the newest entry, so SCARD never undercounts a fresh run.
                pipe.expire(index, ttl_s)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, f"writing {len(entries)} entries of run {run_id!r}", exc) from exc
        return len(entries)

    async def _current_publication(
        self, run_id: str, entries: Sequence[head_tags_pb2.HeadTags]
    ) -> Sequence[head_tags_pb2.HeadTags]:
        """``entries`` less those of a publication of ``run_id`` that was replaced; restarts the run
        (its index and old entries) when these are the first entries of a re-publication."""
        retired_key = self._keys.retired(run_id)
        for _ in range(3):  # the marker only moves when this run is retired again meanwhile: rare
            marker = await self._redis.get(retired_key)
            if marker is None:
                return entries
            since = _marker_us(marker)
            fresh = [e for e in entries if since > 1 and _created_us(e) > since]
            if not fresh:
                raise RetiredRunError(
                    f"run {run_id!r} was replaced by a newer run and these {len(entries)} entries were created "
                    "before that (a late copy of its old publication): skipped"
                )
            if len(fresh) < len(entries):
                log.warning(
                    "head-tag cache: skipped %d entries of run %s created before it was replaced",
                    len(entries) - len(fresh),
                    run_id,
                )
            keys = [retired_key, self._keys.reopened(run_id), self._keys.index(run_id)]
            entry_prefix = self._keys.entry(run_id, "")
            if await self._reopen(keys=keys, args=[marker, self._retired_ttl_s, entry_prefix]):
                return fresh
        raise CacheError(f"run {run_id!r} kept being retired while its entries were written; try again")

    async def present(self, run_id: str) -> int:
        """How many distinct entries of ``run_id`` were written (SCARD of its index)."""
        try:
            return int(await self._redis.scard(self._keys.index(run_id)))
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, f"SCARD of run {run_id!r}", exc) from exc

    async def activate(self, run_id: str, expected_size: int, *, created_at_us: int = 0) -> Activation:
        """Point readers at ``run_id`` if exactly ``expected_size`` of its entries are present.

        Check and swap are one atomic script. On success the previous run is retired: marked with
        this run's creation time (only a publication created later can bring it back) and its
        entries set to expire after the grace period. ``created_at_us`` (the run_end's creation
        time) orders runs: a run created before the active one is superseded, since runs whose
        records interleave across partitions can complete out of order.
        """
        keys = [
            self._keys.current,
            self._keys.index(run_id),
            self._keys.retired(run_id),
            self._keys.current_created,
            self._keys.reopened(run_id),
        ]
        args: list[str | int] = [
            run_id,
            expected_size,
            self._retired_ttl_s,
            f"{self._keys.prefix}:run:",
            max(created_at_us, 0),
        ]
        try:
            status, present, previous = await self._activate(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, f"activating run {run_id!r}", exc) from exc
        previous_id = previous.decode() if isinstance(previous, bytes) else previous
        result = Activation(run_id, ActivationStatus(status.decode()), int(present), expected_size, previous_id or None)
        stale = {
            ActivationStatus.ACTIVATED: result.previous_run_id,
            ActivationStatus.SUPERSEDED: run_id,
        }.get(result.status)
        if stale:
            try:
                await self.retire(stale)
            except CacheError as exc:
                # The swap (or refusal) is done; failing the call now would only make the caller retry it.
                # The entries still expire with their own TTL.
                log.warning("head-tag cache: retiring run %s failed: %s", stale, exc)
        return result

    async def retire(self, run_id: str) -> int:
        """Let every entry of ``run_id`` expire after the grace period; returns how many were touched.

        Unconditional EXPIRE (no ``LT``, which needs Redis 7): the grace is far below any entry TTL.
        If this is interrupted the leftovers still expire with their own TTL.
        """
        index = self._keys.index(run_id)
        touched = 0
        try:
            batch: list[str] = []
            async for member in self._redis.sscan_iter(index, count=WRITE_CHUNK):
                batch.append(member.decode() if isinstance(member, bytes) else str(member))
                if len(batch) >= WRITE_CHUNK:
                    touched += await self._expire_entries(run_id, batch)
                    batch = []
            touched += await self._expire_entries(run_id, batch)
            await self._redis.expire(index, self._grace_s)
        except (RedisError, OSError) as exc:
            raise cache_error(self._redis, f"retiring run {run_id!r}", exc) from exc
        log.info("head-tag cache: run %s retired, %d entries expire in %d s", run_id, touched, self._grace_s)
        return touched

    async def _expire_entries(self, run_id: str, queries: list[str]) -> int:
        if not queries:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for key in self._keys.entries(run_id, queries):
            pipe.expire(key, self._grace_s)
        await pipe.execute()
        return len(queries)


def _created_us(entry: head_tags_pb2.HeadTags) -> int:
    return entry.created_at.ToMicroseconds() if entry.HasField("created_at") else 0


def _marker_us(marker: bytes | str) -> int:
    """A retired marker's creation time; 0 for one that names none (a replacing run of unknown age)."""
    try:
        return int(marker)
    except ValueError:
        return 0
