"""Replay: archived search events through the real-time handler under a candidate configuration.

The same :class:`~services.annotation.handler.AnnotateHandler` the worker runs (no second implementation),
built with the SPEC's student, head-tag run and settings, in this process: nothing is produced to Kafka
and the live cache pointer is never read or moved (a pinned run is read by its own keys). Results go
to ``OUT/<slug of the SPEC>/part-NNNNN.parquet``, one part per ``chunk`` input records in archive order,
each written whole; a replay started again skips the parts it finds, so an interrupted run resumes.
The answers are deterministic for the same inputs and SPEC (the timings are not, and are kept apart).

``served`` reads the annotations that were served for the same events from the archive instead,
matched by event_id, into the same row shape.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from services.annotation.handler import AnnotateHandler, InputRecord, Outcome
from services.annotation.runtime import handler_for
from services.cache.head_tags import connect_head_tag_cache
from services.cache.keys import CachedHeadTags, HeadTagKeys, decode_entry
from services.catalog.artifacts import Catalog, load_catalog
from services.domain import Understanding
from services.errors import QuError, ServiceUnavailable
from services.evaluation.predictors import BatchAnswer
from services.replay.archive import ArchivedRecord, read_archive, records_of, write_parquet_atomically
from services.replay.spec import ReplaySpec
from services.settings import Settings
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS
from services.wire import RecordOrigin, UndecodableRecord, record_to_json

CHUNK = 1000  # input records per result part: the unit of resumption
HANDLER_BATCH = 256  # the worker's batch (streams/batching.py BATCH_MAX)

ROWS = pa.schema(
    [
        pa.field("position", pa.int64(), nullable=False),  # the input's place in the replayed window
        pa.field("event_id", pa.string()),
        pa.field("session_id", pa.string()),  # the search event's, for joins with what the shopper did next
        pa.field("query", pa.string()),
        pa.field("normalized_query", pa.string()),
        pa.field("outcome", pa.string(), nullable=False),  # annotation | dead_letter | not_served
        pa.field("reason", pa.string()),  # why it was dead-lettered (or not found among the served)
        pa.field("source", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("degraded", pa.bool_()),
        pa.field("understanding", pa.string()),  # the Understanding as JSON (tags, categories, rewrites)
        pa.field("processing_ms", pa.float64()),  # not deterministic: the machine's, not the answer's
        pa.field("input", pa.string()),  # topic[partition]@offset
    ]
)


class ReplayError(QuError):
    pass


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    label: str
    directory: Path
    events: int
    parts_written: int
    parts_resumed: int
    outcomes: dict[str, int]
    sources: dict[str, int]


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", label)[:120]


OffsetRanges = dict[int, tuple[int, int]]  # partition -> (first, last) offsets, both included


def parse_offsets(text: str) -> OffsetRanges:
    """``P:FIRST-LAST[,P:FIRST-LAST...]`` (``--offsets``); raises ValueError naming the part that is wrong."""
    ranges: OffsetRanges = {}
    for part in (p.strip() for p in text.split(",")):
        partition, sep, span = part.partition(":")
        first, dash, last = span.partition("-")
        if not (sep and dash and partition.isdigit() and first.isdigit() and last.isdigit()):
            raise ValueError(f"{part!r} is not PARTITION:FIRST-LAST (e.g. 0:1200-1455)")
        if int(first) > int(last):
            raise ValueError(f"{part!r}: the first offset is after the last")
        if int(partition) in ranges:
            raise ValueError(f"{part!r}: partition {partition} is given twice")
        ranges[int(partition)] = (int(first), int(last))
    return ranges


def window(
    archive: Path,
    since: datetime | None,
    until: datetime | None,
    *,
    topic: str = SEARCH_EVENTS,
    offsets: OffsetRanges | None = None,
) -> list[ArchivedRecord]:
    """The search events to replay: the archive's, in [since, until) and, with ``offsets``, within those
    partitions' offset ranges; without duplicates."""
    records = records_of(read_archive(archive, topic, since=since, until=until))
    if offsets is None:
        return list(records)
    return [
        r for r in records if r.partition in offsets and offsets[r.partition][0] <= r.offset <= offsets[r.partition][1]
    ]


def replay(
    spec: ReplaySpec,
    records: Sequence[ArchivedRecord],
    out: Path,
    settings: Settings,
    *,
    archive: Path | None = None,
    chunk: int = CHUNK,
    progress: bool = True,
) -> ReplaySummary:
    """Answer ``records`` under ``spec`` (or read what was served, for ``served``) into ``out``."""
    directory = out / slug(spec.label)
    directory.mkdir(parents=True, exist_ok=True)
    parts = [(i, records[i : i + chunk]) for i in range(0, len(records), chunk)]
    todo = [(i, part) for i, part in parts if not _part_path(directory, i // chunk).exists()]
    if spec.served:
        if archive is None:
            raise ReplayError("--baseline served needs the archive the events came from (--from ARCHIVE)")
        served = _served_annotations(archive)
        for start, part in todo:
            _write_part(directory, start // chunk, [_served_row(start + j, r, served) for j, r in enumerate(part)])
    else:
        asyncio.run(_answer_parts(spec, settings, directory, todo, chunk, len(records), progress))
    summary = summarize(directory, spec.label)
    resumed = len(parts) - len(todo)
    return ReplaySummary(
        spec.label, directory, summary["events"], len(todo), resumed, summary["outcomes"], summary["sources"]
    )


def read_rows(directory: Path) -> pa.Table:
    """Every part of a replay's results, in input order."""
    files = sorted(directory.glob("part-*.parquet"))
    if not files:
        return ROWS.empty_table()
    return pa.concat_tables(pq.read_table(f, schema=ROWS) for f in files).sort_by("position")


def summarize(directory: Path, label: str) -> dict[str, Any]:
    table = read_rows(directory)
    outcomes: dict[str, int] = {}
    sources: dict[str, int] = {}
    for outcome, source in zip(table["outcome"].to_pylist(), table["source"].to_pylist(), strict=True):
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if source:
            sources[source] = sources.get(source, 0) + 1
    return {"label": label, "events": table.num_rows, "outcomes": outcomes, "sources": sources}


# --- answering under a candidate -----------------------------------------------------------------------


async def _answer_parts(
    spec: ReplaySpec,
    settings: Settings,
    directory: Path,
    todo: list[tuple[int, Sequence[ArchivedRecord]]],
    chunk: int,
    total: int,
    progress: bool,
) -> None:
    if not todo:
        return
    settings = _with_overrides(settings, spec.setting_overrides())
    catalog = load_catalog(settings.resolved_catalog_dir)
    handler, close = await _handler(spec, settings, catalog)
    bar = tqdm(total=total, initial=total - sum(len(p) for _, p in todo), unit="event", disable=not progress)
    try:
        for start, part in todo:
            rows = []
            for offset in range(0, len(part), HANDLER_BATCH):
                batch = part[offset : offset + HANDLER_BATCH]
                outcomes = await handler.handle_batch([_input(r) for r in batch])
                for j, (record, outcome) in enumerate(zip(batch, outcomes, strict=True)):
                    rows.append(_outcome_row(start + offset + j, record, outcome))
                bar.update(len(batch))
            _write_part(directory, start // chunk, rows)
    finally:
        bar.close()
        await close()


def _with_overrides(settings: Settings, overrides: dict[str, object]) -> Settings:
    if not overrides:
        return settings
    unknown = sorted(set(overrides) - set(Settings.model_fields))
    if unknown:
        raise ReplayError(f"settings file names unknown settings {unknown}; see `qu --help` or services/settings.py")
    return Settings.model_validate({**settings.model_dump(), **overrides})


async def _handler(spec: ReplaySpec, settings: Settings, catalog: Catalog) -> tuple[AnnotateHandler, Callable[[], Any]]:
    student, close_student = _student(spec.student, settings, catalog)
    cache: Any = _NoCache()
    redis = None
    if spec.cache_run is not None:
        redis = connect_head_tag_cache(
            settings.redis_url, password=settings.resolved_redis_password(), socket_timeout_s=5.0
        )
        cache = _PinnedRun(redis, spec.cache_run)
    handler = handler_for(settings, catalog, cache=cache, student=student)

    async def close() -> None:
        await close_student()
        if redis is not None:
            await redis.aclose()

    return handler, close


class _NoCache:
    async def get_many(self, normalized_queries: Sequence[str]) -> list[None]:
        return [None] * len(normalized_queries)


class _PinnedRun:
    """One head-tag run's entries, read by their keys: the live pointer is neither read nor moved."""

    def __init__(self, redis: Any, run_id: str) -> None:
        self._redis = redis
        self._run = run_id
        self._keys = HeadTagKeys()

    async def get_many(self, normalized_queries: Sequence[str]) -> list[CachedHeadTags | None]:
        try:
            values = await self._redis.mget(self._keys.entries(self._run, list(normalized_queries)))
        except Exception as err:  # redis-py's errors and OSError: the replay cannot go on without its cache
            raise ReplayError(f"reading head-tag run {self._run} from Redis: {err}") from err
        out: list[CachedHeadTags | None] = []
        for value in values:
            try:
                out.append(decode_entry(value) if value is not None else None)
            except ValueError:
                out.append(None)
        return out


class _InProcessStudent:
    """A batch answer (lexicon or an exported ONNX student) as the handler's per-query Student.

    The handler asks for a batch's misses concurrently; the queries asked in one turn of the event loop are
    answered by one batch call, as the student client batches them for Triton (one MiniLM pass, not one per
    query). The same inputs give the same batches, so a replay stays deterministic."""

    def __init__(self, answer: BatchAnswer) -> None:
        self._answer = answer
        self._pending: dict[str, list[asyncio.Future[Understanding]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def understand(self, normalized_query: str) -> Understanding:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Understanding] = loop.create_future()
        if not self._pending:
            # After the tasks already ready in this turn: every miss of the batch has asked by then.
            loop.call_soon(self._flush)
        self._pending.setdefault(normalized_query, []).append(future)
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        task = asyncio.get_running_loop().create_task(self._answer_batch(batch))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _answer_batch(self, batch: dict[str, list[asyncio.Future[Understanding]]]) -> None:
        queries = list(batch)
        try:
            answered = self._answer(queries)
            if inspect.isawaitable(answered):
                answered = await answered
            if len(answered) != len(queries):
                raise ReplayError(f"the student answered {len(answered)} of {len(queries)} queries")
        except Exception as err:  # each waiting miss gets the error; the handler dead-letters its records
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(err)
            return
        for query, understanding in zip(queries, answered, strict=True):
            for future in batch[query]:
                if not future.done():
                    future.set_result(understanding)


class _NoStudent:
    async def understand(self, normalized_query: str) -> Understanding:
        raise ServiceUnavailable("student=none: every miss is answered by the catalog-lexicon fallback")


async def _nothing() -> None:
    return None


def _student(name: str, settings: Settings, catalog: Catalog) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The SPEC's student and how to release it. ``triton[:N]`` and ``teacher`` answer as `qu eval` asks them:
    the Triton student at QU_TRITON_GRPC_URL (version N, or the served default), the catalog teacher's pipeline."""
    if name == "none":
        return _NoStudent(), _nothing
    if name == "lexicon":
        from services.evaluation.predictors import lexicon_answer

        return _InProcessStudent(lexicon_answer(catalog, settings.embedder())), _nothing
    if name == "teacher":
        from services.evaluation.teacher_predictor import TeacherAnswer
        from services.teacher.catalog_teacher import CatalogTeacher

        teacher = TeacherAnswer(settings, catalog, settings.embedder(), CatalogTeacher(catalog))
        return _InProcessStudent(teacher), _nothing
    if name == "triton" or name.startswith("triton:"):
        from services.evaluation.triton_student import TritonStudentAnswer

        triton = TritonStudentAnswer(settings.triton_grpc_url, settings.student_model, name.partition(":")[2])
        return _InProcessStudent(triton), triton.close
    from services.student.export.publish import published_store
    from services.student.onnx_student import OnnxStudent

    where = name.removeprefix("onnx:")
    directory = published_store(settings.state_dir) / where if where.isdigit() else Path(where)
    if not directory.is_dir():
        raise ReplayError(f"student={name}: no exported student version at {directory} (see `qu student export`)")
    student = OnnxStudent(directory, settings.resolved_catalog_dir)

    async def close() -> None:
        student.close()

    return _InProcessStudent(student.understand), close


def _input(record: ArchivedRecord) -> InputRecord:
    origin = RecordOrigin(record.topic, record.partition, record.offset)
    return InputRecord(record.value, record.key, list(record.headers), origin, record.timestamp_ms / 1000)


def _where(record: ArchivedRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset}"


def _outcome_row(position: int, record: ArchivedRecord, outcome: Outcome) -> dict[str, Any]:
    if outcome.annotation is None:
        return _row(position, record, "dead_letter", reason=outcome.reason)
    return _annotation_row(position, record, outcome.annotation.to_json())


def _annotation_row(position: int, record: ArchivedRecord, data: dict[str, Any]) -> dict[str, Any]:
    understanding = Understanding.from_json(data)
    timings = data.get("timings") or {}
    return _row(
        position,
        record,
        "annotation",
        event_id=data.get("event_id"),
        query=data.get("query"),
        normalized_query=data.get("normalized_query"),
        source=data.get("source"),
        model_version=data.get("model_version"),
        degraded=bool(data.get("degraded")),
        understanding=orjson.dumps(understanding.to_json()).decode(),
        processing_ms=timings.get("total_ms"),
    )


def _row(position: int, record: ArchivedRecord, outcome: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in ROWS.names}
    row.update(position=position, event_id=record.event_id, outcome=outcome, input=_where(record))
    row["session_id"] = _session_of(record)
    row.update({name: value for name, value in fields.items() if value is not None})
    return row


def _session_of(record: ArchivedRecord) -> str | None:
    try:
        data = record_to_json(record.topic, record.value, list(record.headers))
    except UndecodableRecord:
        return None
    session = data.get("session_id") if isinstance(data, dict) else None
    return session if isinstance(session, str) and session else None


# --- what was served ------------------------------------------------------------------------------------


def _served_annotations(archive: Path) -> dict[str, dict[str, Any] | str]:
    """event_id -> the first annotation served for it (as JSON), or why it could not be read."""
    served: dict[str, dict[str, Any] | str] = {}
    for record in records_of(read_archive(archive, QUERY_ANNOTATIONS)):
        if record.event_id is None or record.event_id in served:
            continue
        try:
            data = record_to_json(QUERY_ANNOTATIONS, record.value, list(record.headers))
        except UndecodableRecord as err:
            served[record.event_id] = f"undecodable annotation at {_where(record)}: {err}"
            continue
        served[record.event_id] = data if isinstance(data, dict) else f"not an annotation at {_where(record)}"
    return served


def _served_row(position: int, record: ArchivedRecord, served: dict[str, dict[str, Any] | str]) -> dict[str, Any]:
    found = served.get(record.event_id or "")
    if found is None:
        return _row(position, record, "not_served", reason="no annotation with this event_id in the archive")
    if isinstance(found, str):
        return _row(position, record, "not_served", reason=found)
    try:
        return _annotation_row(position, record, found)
    except (KeyError, ValueError, TypeError) as err:
        return _row(position, record, "not_served", reason=f"unreadable annotation: {err!r}")


def _part_path(directory: Path, index: int) -> Path:
    return directory / f"part-{index:05d}.parquet"


def _write_part(directory: Path, index: int, rows: list[dict[str, Any]]) -> None:
    write_parquet_atomically(_part_path(directory, index), pa.Table.from_pylist(rows, schema=ROWS))
