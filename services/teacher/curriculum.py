"""The student's curriculum: every teacher answer, validated and guardrailed, with its provenance (Parquet).

Layout under the curriculum root (``STATE_DIR/curriculum``)::

    runs/<run_id>/part-00000.parquet, part-00001.parquet, ...   one part per chunk of taught queries
    runs/<run_id>/manifest.json                                 written when the run completes
    current -> runs/<run_id>                                    the last completed run with a valid SRL answer

One row per (query, task). A part is written to a temporary name, fsynced and renamed, so a run
interrupted mid-chunk leaves whole parts only; resuming skips the queries those parts hold a valid SRL
answer for (a query whose answer was unavailable or invalid is taught again), and the row id
(``sha256(run_id, query, task)``) lets a reader keep each query's latest record. The run
id is derived from everything that shapes the answers (queries, teacher, templates, catalog,
guardrail thresholds), so the same inputs resume the same run and a changed input starts a new one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from services.atomic_files import write_bytes_atomic
from services.domain import Tag
from services.errors import InputError, QuError
from services.gold.model import GoldQuery
from services.teacher.context_types import TaskName

RUNS = "runs"
CURRENT = "current"
MANIFEST = "manifest.json"
SCHEMA_VERSION = 2  # 2: choice, alternative_json (a hybrid run) and raw_reply; a version 1 part reads them empty

SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("query", pa.string(), nullable=False),  # normalized
        pa.field("origin", pa.string(), nullable=False),  # head | promoted | explicit
        pa.field("query_count", pa.int64(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # answered | invalid | unavailable | rejected | failed
        pa.field("problem", pa.string(), nullable=False),  # why not answered ("" when answered)
        pa.field("answer_json", pa.string(), nullable=False),  # the task's answer after the guardrails
        pa.field("teacher_answer_json", pa.string(), nullable=False),  # as the teacher gave it, validated
        pa.field("reasoning", pa.string(), nullable=False),
        pa.field("guardrails_json", pa.string(), nullable=False),  # decisions on this task's items
        pa.field("teacher_backend", pa.string(), nullable=False),
        pa.field("teacher_version", pa.string(), nullable=False),
        pa.field("template_hash", pa.string(), nullable=False),
        pa.field("context_json", pa.string(), nullable=False),  # the retrieved context the prompt showed
        pa.field("context_sha256", pa.string(), nullable=False),
        pa.field("catalog_build", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int64(), nullable=False),
        pa.field("completion_tokens", pa.int64(), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),  # ISO 8601 UTC
        pa.field("schema_version", pa.int32(), nullable=False),
        # A hybrid run: which teacher's answer this row publishes and why, and the other teacher's answer.
        pa.field("choice", pa.string(), nullable=True),
        pa.field("alternative_json", pa.string(), nullable=True),
        pa.field("raw_reply", pa.string(), nullable=True),  # an LLM's reply as written, valid or not
    ]
)


class CurriculumError(QuError):
    pass


@dataclass(frozen=True, slots=True)
class CurriculumRecord:
    record_id: str
    run_id: str
    query: str
    origin: str
    query_count: int
    task: str
    status: str
    problem: str
    answer_json: str
    teacher_answer_json: str
    reasoning: str
    guardrails_json: str
    teacher_backend: str
    teacher_version: str
    template_hash: str
    context_json: str
    context_sha256: str
    catalog_build: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    created_at: str
    schema_version: int = SCHEMA_VERSION
    choice: str = ""  # a hybrid run: "<llm|catalog>: why this teacher's answer is the one published"
    alternative_json: str = "{}"  # a hybrid run: the other teacher's answer, status and guardrail decisions
    raw_reply: str = ""  # an LLM's reply as the model wrote it, valid or not ("" for the catalog teacher)

    @property
    def valid_srl(self) -> bool:
        """A valid SRL answer: what makes a query taught (resume skips it) and a run fit to be ``current``."""
        return self.task == TaskName.SRL.value and self.status == "answered"

    @property
    def validated(self) -> bool:
        """Answered and nothing dropped by a guardrail: fit to be a few-shot example for later queries."""
        return self.status == "answered" and self.guardrails_json in ("[]", "")

    @property
    def answer(self) -> dict[str, Any]:
        return _object(self.answer_json)

    @property
    def teacher_answer(self) -> dict[str, Any]:
        return _object(self.teacher_answer_json)

    @property
    def alternative(self) -> dict[str, Any]:
        return _object(self.alternative_json)


def _object(text: str) -> dict[str, Any]:
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {}


def record_id(run_id: str, query: str, task: TaskName | str) -> str:
    return hashlib.sha256(f"{run_id}\x1f{query}\x1f{task}".encode()).hexdigest()


class CurriculumRun:
    """One run's directory: appends whole parts, knows what it holds, completes with a manifest."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.directory = root / RUNS / run_id

    @property
    def complete(self) -> bool:
        return (self.directory / MANIFEST).is_file()

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob("part-*.parquet"))

    def records(self) -> list[CurriculumRecord]:
        return read_records(self.directory) if self.parts() else []

    def taught_queries(self) -> set[str]:
        if not self.parts():
            return set()
        table = pq.read_table(self.parts(), columns=["query"]) if self.parts() else None
        return set(table.column("query").to_pylist()) if table is not None else set()

    def append(self, records: Iterable[CurriculumRecord]) -> Path | None:
        rows = [asdict(r) for r in records]
        if not rows:
            return None
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = self.parts()
        index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.directory / f"part-{index:05d}.parquet"
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def finish(self, manifest: dict[str, Any], *, activate: bool = True) -> None:
        """Write the manifest and, when ``activate``, point ``current`` at this run (both atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.directory / MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
        if not activate:
            return
        link = self.root / CURRENT
        tmp = self.root / f".{CURRENT}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path(RUNS) / self.run_id)
        os.replace(tmp, link)


def resolve_run_dir(path: Path) -> Path:
    """A run directory from: itself, a curriculum root (its ``current`` run), or one part file's directory."""
    if path.is_file():
        return path.parent
    if (path / CURRENT).exists():
        return (path / CURRENT).resolve()
    if path.is_dir() and any(path.glob("part-*.parquet")):
        return path
    raise CurriculumError(
        f"{path} holds no curriculum: expected a run directory with part-*.parquet files or a curriculum root "
        f"with a '{CURRENT}' run (made by `qu teacher run`)"
    )


def read_records(path: Path) -> list[CurriculumRecord]:
    """Every record of a run (``path`` as :func:`resolve_run_dir` takes it), one per record id: a later part's
    record replaces an earlier one of the same id (a query taught again after its answer failed)."""
    directory = resolve_run_dir(path)
    parts = [path] if path.is_file() else sorted(directory.glob("part-*.parquet"))
    try:
        table = pq.read_table(parts, schema=SCHEMA)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(str(directory), f"not a curriculum of schema version {SCHEMA_VERSION}: {exc}") from None
    latest: dict[str, CurriculumRecord] = {}  # in order of first appearance, the last record of each id
    for row in table.to_pylist():
        # Columns a version 1 part lacks come back null.
        row["choice"] = row["choice"] or ""
        row["alternative_json"] = row["alternative_json"] or "{}"
        row["raw_reply"] = row["raw_reply"] or ""
        latest[row["record_id"]] = CurriculumRecord(**row)
    return list(latest.values())


def read_srl_gold(path: Path) -> list[GoldQuery]:
    """The answered SRL records as gold queries (spans after the guardrails), for training and evaluation."""
    out = []
    for record in read_records(path):
        if not record.valid_srl:
            continue
        spans = tuple(sorted((Tag.from_json(t) for t in record.answer.get("tags", [])), key=lambda t: t.start))
        out.append(GoldQuery(record.query, spans, kind=record.origin, source=f"curriculum:{record.record_id[:12]}"))
    return out
