"""Which queries the teacher teaches: the head of a query log, tail queries promoted from cache misses, or a list.

* **Head**: the ``top`` most frequent normalized queries of one or more search-event logs (JSON
  lines with at least ``query``; ``session_id`` and ``ts`` give the session follow-ups). Ties
  break alphabetically, so the same log always gives the same head.
* **Promoted**: queries recorded on ``qu.cache-misses.v1`` at least ``min_misses`` times (the tail
  that keeps arriving). Counted from the whole topic, so the same topic gives the same promotions.
* **Explicit**: ``--queries FILE``, one query per line (or JSON lines with ``query``).

Each selected query carries its session follow-ups: the searches the same sessions made next,
most frequent first, for session-aware rewrites.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from services.errors import InputError
from services.jsonl import read_json_lines
from services.normalize import normalize_query
from services.wire import Headers, InvalidCacheMiss, decode_cache_miss

MAX_FOLLOWUPS = 5


class Origin(StrEnum):
    HEAD = "head"
    PROMOTED = "promoted"  # kept missing the cache
    EXPLICIT = "explicit"  # named in --queries


@dataclass(frozen=True, slots=True)
class SelectedQuery:
    query: str  # normalized
    origin: Origin
    count: int  # searches (head), misses (promoted), or 0 (explicit)
    followups: tuple[str, ...] = ()


@dataclass(slots=True)
class QueryLog:
    """Counts and session follow-ups of normalized queries, read from search-event logs."""

    counts: Counter[str] = field(default_factory=Counter)
    followups: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    events: int = 0

    @classmethod
    def read(cls, paths: Iterable[Path]) -> QueryLog:
        log = cls()
        sessions: dict[str, list[tuple[str, int, str]]] = defaultdict(list)  # session -> (ts, order, query)
        for path in paths:
            for line_no, row in _json_lines(path):
                query = row.get("query")
                if not isinstance(query, str):
                    raise InputError(str(path), "missing or not a string", row=line_no, column="query")
                key = normalize_query(query)
                if not key:
                    continue  # nothing to teach; the real-time path dead-letters such events
                log.counts[key] += 1
                log.events += 1
                session = row.get("session_id")
                if isinstance(session, str) and session:
                    sessions[session].append((str(row.get("ts", "")), log.events, key))
        for searches in sessions.values():
            searches.sort()
            for i, (_, _, query) in enumerate(searches):
                later = dict.fromkeys(q for _, _, q in searches[i + 1 :] if q != query)
                log.followups[query].update(list(later))
        return log

    def head(self, top: int) -> list[SelectedQuery]:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [SelectedQuery(q, Origin.HEAD, n, self.followups_of(q)) for q, n in ranked]

    def followups_of(self, query: str) -> tuple[str, ...]:
        counted = self.followups.get(query)
        if not counted:
            return ()
        return tuple(q for q, _ in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_FOLLOWUPS])


def promoted(
    miss_counts: Counter[str], min_misses: int, *, exclude: set[str], log: QueryLog | None
) -> list[SelectedQuery]:
    """Queries missed at least ``min_misses`` times and not already selected, most missed first."""
    ranked = sorted(
        ((q, n) for q, n in miss_counts.items() if n >= min_misses and q not in exclude),
        key=lambda kv: (-kv[1], kv[0]),
    )
    return [SelectedQuery(q, Origin.PROMOTED, n, log.followups_of(q) if log else ()) for q, n in ranked]


def count_misses(records: Iterable[tuple[bytes | None, Headers, str]]) -> Counter[str]:
    """Normalized queries of ``qu.cache-misses.v1`` records ``(value, headers, where)``, in either format the worker
    writes (services/wire.py); a bad record is an InputError naming where it is."""
    counts: Counter[str] = Counter()
    for value, headers, where in records:
        try:
            miss = decode_cache_miss(value, headers)
        except InvalidCacheMiss as exc:
            raise InputError(where, f"not a cache-miss record: {exc}", column="normalized_query") from None
        key = normalize_query(miss.normalized_query)
        if key:
            counts[key] += 1
    return counts


def read_query_list(path: Path, log: QueryLog | None = None) -> list[SelectedQuery]:
    """``--queries FILE``: plain lines, or JSON lines with ``query``; blank lines skipped, duplicates kept once."""
    out: dict[str, SelectedQuery] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(str(path), f"cannot read the query list: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                row = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InputError(str(path), f"not JSON ({exc})", row=line_no) from None
            value = row.get("query") if isinstance(row, dict) else None
            if not isinstance(value, str):
                raise InputError(str(path), "missing or not a string", row=line_no, column="query")
            text = value
        key = normalize_query(text)
        if not key:
            raise InputError(str(path), f"{text!r} has no words to teach", row=line_no)
        out.setdefault(key, SelectedQuery(key, Origin.EXPLICIT, 0, log.followups_of(key) if log else ()))
    return list(out.values())


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for line_no, row in read_json_lines(path, "the query log"):
        if not isinstance(row, dict):
            raise InputError(str(path), "expected a JSON object", row=line_no)
        yield line_no, row
