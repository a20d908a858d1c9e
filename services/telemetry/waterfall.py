"""Reading stored spans back as one event's trace (``qu trace EVENT_ID``) or the slowest traces.

A search event's trace is found by its ``process`` span, which carries ``qu.event_id``; a redelivered
event has several, and the latest is shown. Calls shared by several events (the batch's Redis lookup,
a student request) appear in the event's trace as twins linked to the real call, whose children (the
Redis client span, the gRPC span, Triton's spans) live in another event's trace: the waterfall follows
each link and shows that call's subtree under the twin.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from services.telemetry.span_store import StoredSpan

EVENT_ID = "qu.event_id"
PROCESS_PREFIX = "process "
# The attributes worth a column: who answered, what the cache and the student did, where the record was.
KEY_ATTRIBUTES = (
    "qu.source",
    "qu.degraded",
    "qu.model_version",
    "qu.queries",
    "qu.hits",
    "qu.batch.queries",
    "qu.guardrails.dropped",
    "qu.dead_letter.reason",
    "messaging.destination.partition.id",
    "messaging.kafka.offset",
    "db.statement",
    "db.query.text",
    "triton.model_name",
    "triton.model_version",
)


@dataclass(frozen=True, slots=True)
class Row:
    depth: int
    span: StoredSpan
    service: str
    offset_ms: float
    linked: bool  # reached through a link (a shared call made in another event's trace)


class TraceNotFound(LookupError):
    pass


def event_trace(spans: Iterable[StoredSpan], event_id: str) -> list[Row]:
    """The rows of ``event_id``'s latest trace, its shared calls' subtrees included; raises TraceNotFound."""
    all_spans = list(spans)
    processes = [s for s in all_spans if s.name.startswith(PROCESS_PREFIX) and s.attributes.get(EVENT_ID) == event_id]
    if not processes:
        raise TraceNotFound(
            f"no trace for event {event_id!r}: it was not sampled (QU_TRACE_SAMPLE_RATIO, or its traceparent said "
            "not sampled), its spans are not exported yet (a second), or they were rotated out of the store"
        )
    latest = max(processes, key=lambda s: s.start_ns)
    return _rows(all_spans, latest.trace_id)


def _rows(spans: list[StoredSpan], trace_id: str) -> list[Row]:
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    children: dict[tuple[str, str], list[StoredSpan]] = defaultdict(list)
    linked_from: dict[tuple[str, str], list[StoredSpan]] = defaultdict(list)  # a span -> spans that link to it
    for s in spans:
        if s.parent_span_id:
            children[(s.trace_id, s.parent_span_id)].append(s)
        for link in s.links:
            linked_from[link].append(s)
    members = [s for s in spans if s.trace_id == trace_id]
    roots = [s for s in members if (s.trace_id, s.parent_span_id) not in by_id]
    start = min(s.start_ns for s in members)
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()

    def walk(span: StoredSpan, depth: int, service: str, linked: bool) -> None:
        key = (span.trace_id, span.span_id)
        if key in seen:
            return
        seen.add(key)
        own = span.service or service
        rows.append(Row(depth, span, own, (span.start_ns - start) / 1e6, linked))
        for link in span.links:
            target = by_id.get(link)
            if target is not None and link not in seen:
                # The shared call's real span is another event's; show what happened under it.
                for child in sorted(children.get(link, []), key=lambda s: s.start_ns):
                    walk(child, depth + 1, target.service or own, True)
        for child in sorted(children.get(key, []), key=lambda s: s.start_ns):
            walk(child, depth + 1, own, linked)
        # A request made for several events (one student request for several queries) has its parent in the
        # first event's trace and a link to each other event's span: shown under those too.
        for sharer in sorted(linked_from.get(key, []), key=lambda s: s.start_ns):
            if sharer.trace_id != span.trace_id and sharer.kind == "CLIENT":  # not another event's twin
                walk(sharer, depth + 1, own, True)

    for root in sorted(roots, key=lambda s: s.start_ns):
        walk(root, 0, "", False)
    return rows


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    event_id: str
    duration_ms: float
    source: str
    degraded: bool
    spans: int


def slowest(spans: Iterable[StoredSpan], count: int) -> list[TraceSummary]:
    """The ``count`` slowest search-event traces, by their ``process`` span's duration."""
    per_trace: dict[str, list[StoredSpan]] = defaultdict(list)
    for s in spans:
        per_trace[s.trace_id].append(s)
    summaries = []
    for trace_id, members in per_trace.items():
        processes = [s for s in members if s.name.startswith(PROCESS_PREFIX) and EVENT_ID in s.attributes]
        if not processes:
            continue
        process = max(processes, key=lambda s: s.duration_ms)
        summaries.append(
            TraceSummary(
                trace_id,
                str(process.attributes[EVENT_ID]),
                process.duration_ms,
                str(process.attributes.get("qu.source", "")),
                bool(process.attributes.get("qu.degraded", False)),
                len(members),
            )
        )
    return sorted(summaries, key=lambda t: t.duration_ms, reverse=True)[:count]


def key_attributes(span: StoredSpan) -> str:
    shown = [
        f"{k.removeprefix('qu.').removeprefix('messaging.')}={span.attributes[k]}"
        for k in KEY_ATTRIBUTES
        if k in span.attributes
    ]
    if span.status == "ERROR":
        shown.append(f"ERROR {span.status_message[:80]}")
    dropped = [e for e in span.events if e.get("name") == "guardrail dropped"]
    shown += [f"dropped {e.get('qu.guardrail.item')} ({e.get('qu.guardrail.reason')})" for e in dropped[:3]]
    return " ".join(shown)
