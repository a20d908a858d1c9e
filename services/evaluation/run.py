"""Running an evaluation: read the gold file, ask the predictor in batches, score."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path

from services.catalog.attributes import AttributeKind, AttributeVocabulary
from services.domain import Role, Understanding
from services.errors import InputError
from services.evaluation.categories import CategoryAccuracy
from services.evaluation.predictors import PredictionError, Predictor
from services.gold import GoldQuery, read_bio_spans, read_qu_labels, read_queryner
from services.normalize import normalize_query
from services.span_scores import SpanScores

__all__ = [
    "GoldFormat",
    "ignored_labels",
    "keep_attribute_kinds",
    "load_gold",
    "parse_attribute_kinds",
    "predict_all",
    "score_categories",
    "score_spans_of",
]

DEFAULT_BATCH = 64


class GoldFormat(StrEnum):
    QUERYNER = "queryner"  # {"examples": [{"tokens", "ner_tags"}]}, roles mapped (services.gold.queryner)
    QU = "qu"  # the engine's JSON lines labels (``qu traffic`` writes EVENTS.labels.jsonl)
    # {"text", "labels": [[start, end, "B-X"], ...]} JSON lines, labels mapped to roles (services.gold.bio_spans)
    SPANS = "spans"


def load_gold(
    path: Path, gold_format: GoldFormat, *, limit: int | None = None, label_map: Mapping[str, Role] | None = None
) -> list[GoldQuery]:
    """The gold queries of ``path`` (the first ``limit``); InputError names a missing, empty or malformed file.

    ``label_map`` (the source's label -> a role) is what the ``spans`` format needs and the others refuse."""
    if gold_format is GoldFormat.QUERYNER and path.name.startswith("test"):
        # QueryNER's test split is held out: nothing in the engine reads it, so no choice is tuned on it.
        raise InputError(str(path), "QueryNER's test split is held out: evaluate on train.json or validation.json")
    if (gold_format is GoldFormat.SPANS) != (label_map is not None):
        needs = "needs a label map (TYPE=product,BRAND=brand,...)" if label_map is None else "takes no label map"
        raise InputError(str(path), f"the {gold_format.value} format {needs}")
    if not path.exists():
        raise InputError(str(path), "no such gold file")
    if label_map is not None:  # the spans format (checked above)
        gold = read_bio_spans(path, label_map)
    else:
        gold = read_queryner(path) if gold_format is GoldFormat.QUERYNER else read_qu_labels(path)
    if not gold:
        raise InputError(str(path), f"no gold queries in the file (read as --format {gold_format.value})")
    return gold[:limit] if limit is not None else gold


def ignored_labels(gold: Sequence[GoldQuery]) -> dict[str, int]:
    """How many spans of each source label mapped to no role and were left out (most first)."""
    counts = Counter(kind for g in gold for kind in g.ignored_types)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


async def predict_all(
    predictor: Predictor,
    queries: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
) -> list[Understanding]:
    """The predictor's answers to every query, asked ``batch_size`` at a time; ``progress(n)`` after each batch."""
    out: list[Understanding] = []
    for first in range(0, len(queries), batch_size):
        batch = queries[first : first + batch_size]
        answers = await predictor.predict(batch)
        if len(answers) != len(batch):
            raise PredictionError(f"{predictor.name} answered {len(answers)} of a batch of {len(batch)} queries")
        out += answers
        if progress is not None:
            progress(len(batch))
    return out


def score_spans_of(gold: Sequence[GoldQuery], predicted: Sequence[Understanding]) -> SpanScores:
    scores = SpanScores()
    for g, p in zip(gold, predicted, strict=True):
        scores.add(g.spans, p.tags, g.kind)
    return scores


def score_categories(gold: Sequence[GoldQuery], predicted: Sequence[Understanding]) -> CategoryAccuracy:
    accuracy = CategoryAccuracy()
    for g, p in zip(gold, predicted, strict=True):
        accuracy.add(g.category, p.categories, g.kind)
    return accuracy


def parse_attribute_kinds(text: str) -> frozenset[AttributeKind]:
    """``"size,price"`` -> the kinds; ValueError names the unknown one and the known ones."""
    kinds = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        try:
            kinds.add(AttributeKind(item))
        except ValueError:
            known = ", ".join(k.value for k in AttributeKind)
            raise ValueError(f"{item!r} is not an attribute kind ({known})") from None
    if not kinds:
        raise ValueError("no attribute kind given: name the kinds the gold set labels, e.g. size")
    return frozenset(kinds)


def keep_attribute_kinds(
    answers: Sequence[Understanding], kinds: frozenset[AttributeKind], vocabulary: AttributeVocabulary
) -> tuple[list[Understanding], dict[str, int]]:
    """The answers without the attribute tags of kinds a gold set does not label, and how many were left out
    by kind. A gold set that labels only volumes and percentages (X5) would count a flavour the engine
    rightly tags as spurious; scoring only the kinds it labels is the fair comparison, and the left-out
    count says what the score does not see. An attribute whose kind the vocabulary cannot tell is kept."""
    left_out: Counter[str] = Counter()
    out = []
    for answer in answers:
        tags = []
        for tag in answer.tags:
            kind = _kind_of(tag.text, tag.canonical, vocabulary) if tag.role is Role.ATTRIBUTE else None
            if kind is not None and kind not in kinds:
                left_out[kind.value] += 1
                continue
            tags.append(tag)
        out.append(Understanding(tags, answer.categories, answer.rewrites, answer.version))
    return out, dict(sorted(left_out.items()))


def _kind_of(text: str, canonical: str, vocabulary: AttributeVocabulary) -> AttributeKind | None:
    term = vocabulary.terms.get(canonical)
    if term is not None:
        return term.kind
    normalized = normalize_query(text)
    matches = vocabulary.match(normalized)
    whole = len(matches) == 1 and (matches[0].start, matches[0].end) == (0, len(normalized))
    return matches[0].kind if whole else None
