"""The student's examples: gold queries from the curriculum and QueryNER, normalized, split and de-duplicated.

The student reads what the real-time path sends it: normalized queries. Gold spans index the
text as the source wrote it, so each span is mapped onto the normalized text through
``normalize_with_offsets``; a span that vanishes in normalization (only punctuation, say) is
dropped and counted.

Held-out split: a curriculum query is held out when a hash of its normalized text says so, so the
split is deterministic across runs and machines and a query (repeated in the curriculum under
several spellings) never lands on both sides. No training example shares its normalized text with
any held-out example (curriculum held-out or QueryNER validation).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from services.domain import Tag
from services.errors import QuError
from services.gold import GoldQuery, read_qu_labels, read_queryner
from services.normalize import normalize_with_offsets

QUERYNER_TRAIN = "train.json"
QUERYNER_VALIDATION = "validation.json"
# QueryNER's test split (test.json) is never read: it stays unseen for a final, honest score.
QUERYNER_NEVER = "test.json"


class StudentDataError(QuError):
    """The student's training data cannot be read or is empty."""


@dataclass(frozen=True, slots=True)
class Example:
    """A normalized query and its spans, offsets into ``text``; ``types`` as :attr:`GoldQuery.span_types`."""

    text: str
    spans: tuple[Tag, ...]
    source: str = ""
    types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        row: dict[str, object] = {"query": self.text, "spans": [t.to_json() for t in self.spans], "source": self.source}
        if self.types:
            row["types"] = list(self.types)
        return row

    @classmethod
    def from_json(cls, row: dict[str, object]) -> Example:
        spans, types = row.get("spans", []), row.get("types", [])
        if not isinstance(spans, list):
            raise ValueError(f"spans is {type(spans).__name__}, expected a list")
        if not isinstance(types, list) or (types and len(types) != len(spans)):
            raise ValueError(f"types must be a list with one type per span ({len(spans)})")
        tags = tuple(Tag.from_json(t) for t in spans)
        return cls(str(row["query"]), tags, str(row.get("source", "")), tuple(str(t) for t in types))


@dataclass(slots=True)
class MappingStats:
    """What normalization cost: counted, not hidden."""

    queries: int = 0
    empty_queries: int = 0  # normalized to nothing
    spans: int = 0
    dropped_spans: int = 0  # no character of the span survives normalization, or it overlaps an earlier one

    def to_json(self) -> dict[str, int]:
        return {
            "queries": self.queries,
            "empty_queries": self.empty_queries,
            "spans": self.spans,
            "dropped_spans": self.dropped_spans,
        }


def normalize_gold(gold: GoldQuery, stats: MappingStats) -> Example | None:
    """``gold`` on its normalized query, spans mapped; None when the query normalizes to nothing."""
    stats.queries += 1
    stats.spans += len(gold.spans)
    normalized = normalize_with_offsets(gold.query)
    text = normalized.text
    if not text:
        stats.empty_queries += 1
        stats.dropped_spans += len(gold.spans)
        return None
    spans: list[Tag] = []
    types: list[str] = []
    for index, span in enumerate(gold.spans):
        # Normalized characters whose source lies inside the span; inserted ones ("&" -> " and ") map to their source.
        inside = [i for i, source in enumerate(normalized.offsets) if span.start <= source < span.end]
        if not inside:
            stats.dropped_spans += 1
            continue
        start, end = inside[0], inside[-1] + 1
        while start < end and text[start] == " ":
            start += 1
        while end > start and text[end - 1] == " ":
            end -= 1
        if start == end or (spans and start < spans[-1].end):
            stats.dropped_spans += 1
            continue
        piece = text[start:end]
        spans.append(Tag(span.role, start, end, piece, piece, 1.0))
        if gold.span_types:
            types.append(gold.span_types[index])
    return Example(text, tuple(spans), gold.source, tuple(types))


def normalize_all(golds: Iterable[GoldQuery], stats: MappingStats) -> list[Example]:
    """Normalized examples, the first of each normalized query kept (a repeat would only weight it)."""
    seen: set[str] = set()
    out: list[Example] = []
    for gold in golds:
        example = normalize_gold(gold, stats)
        if example is None or example.text in seen:
            continue
        seen.add(example.text)
        out.append(example)
    return out


def held_out(text: str, percent: int) -> bool:
    """Whether the normalized query ``text`` belongs to the held-out split (stable: a hash, not a random draw)."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") % 100
    return bucket < percent


def read_curriculum(path: Path) -> list[GoldQuery]:
    """The teacher's curriculum (a Parquet run or curriculum root) or a file in the engine's gold JSON-lines format."""
    if not path.exists():
        raise StudentDataError(
            f"no curriculum at {path}: run the teacher (`qu teacher run`), or pass --curriculum PATH / --no-curriculum"
        )
    if path.is_dir() or path.suffix == ".parquet":
        from services.teacher.curriculum import read_srl_gold

        return read_srl_gold(path)
    return read_qu_labels(path)


def read_queryner_split(directory: Path, name: str) -> list[GoldQuery]:
    if name == QUERYNER_NEVER:
        raise StudentDataError(f"{directory / name}: QueryNER's test split is never read by training")
    path = directory / name
    if not path.is_file():
        raise StudentDataError(
            f"no QueryNER {name} in {directory}: set QU_STUDENT_QUERYNER_DIR or pass --queryner DIR (--no-queryner)"
        )
    return read_queryner(path)


@dataclass(slots=True)
class StudentData:
    train: list[Example]
    heldout: list[Example]  # the curriculum's held-out split
    queryner_validation: list[Example]
    stats: dict[str, object] = field(default_factory=dict)
    # Where each training example came from ("curriculum" or "queryner_train"), parallel to ``train``.
    train_origins: list[str] = field(default_factory=list)

    def epoch_indices(self, repeats: dict[str, int]) -> list[int]:
        """Indices into ``train`` for one epoch: an example of origin O appears ``repeats.get(O, 1)`` times."""
        if not self.train_origins:
            return list(range(len(self.train)))
        return [i for i, origin in enumerate(self.train_origins) for _ in range(repeats.get(origin, 1))]


def build_data(
    curriculum: Sequence[GoldQuery], queryner_train: Sequence[GoldQuery], queryner_validation: Sequence[GoldQuery],
    *, heldout_percent: int,
) -> StudentData:  # fmt: skip
    """Normalize every source, split the curriculum by hash, and keep held-out queries out of training."""
    curriculum_stats, qn_train_stats, qn_val_stats = MappingStats(), MappingStats(), MappingStats()
    curriculum_examples = normalize_all(curriculum, curriculum_stats)
    heldout = [e for e in curriculum_examples if held_out(e.text, heldout_percent)]
    validation = normalize_all(queryner_validation, qn_val_stats)
    unseen = {e.text for e in heldout} | {e.text for e in validation}
    train: list[Example] = []
    origins: list[str] = []
    excluded: Counter[str] = Counter()
    seen: set[str] = set()
    for name, examples in (
        ("curriculum", [e for e in curriculum_examples if not held_out(e.text, heldout_percent)]),
        ("queryner_train", normalize_all(queryner_train, qn_train_stats)),
    ):
        for example in examples:
            if example.text in unseen:
                excluded[f"{name}_in_heldout"] += 1
            elif example.text in seen:
                excluded[f"{name}_duplicate"] += 1
            else:
                seen.add(example.text)
                train.append(example)
                origins.append(name)
    stats: dict[str, object] = {
        "curriculum": curriculum_stats.to_json(),
        "queryner_train": qn_train_stats.to_json(),
        "queryner_validation": qn_val_stats.to_json(),
        "excluded_from_train": dict(excluded),
        "train_examples": len(train),
        "heldout_examples": len(heldout),
        "queryner_validation_examples": len(validation),
    }
    if not train:
        raise StudentDataError("no training examples: give a curriculum and/or QueryNER train")
    return StudentData(train, heldout, validation, stats, origins)


def write_examples(path: Path, examples: Iterable[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for example in examples:
            handle.write(orjson.dumps(example.to_json()) + b"\n")


def read_examples(path: Path) -> list[Example]:
    out: list[Example] = []
    with path.open("rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    out.append(Example.from_json(orjson.loads(line)))
                except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as err:
                    raise StudentDataError(f"{path}, line {line_no}: not a student example ({err})") from err
    return out
