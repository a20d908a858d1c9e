"""Calibrating the guardrails' thresholds on labelled data (``qu guardrails calibrate``).

Deterministic: the same catalog, labels, model and options give the same figures.

- ``category_min_similarity``: from the traffic generator's labels (``qu traffic`` writes
  ``*.labels.jsonl``; any file :func:`services.gold.read_qu_labels` reads will do). For each
  distinct query with a gold path in the taxonomy, the query's cosine similarity to the gold path
  is a positive, and its similarity to each other path among its ``top_k`` nearest leaf paths is a
  negative: the hard cases, the paths a teacher or student would propose and get wrong.
- ``rewrite_min_similarity``: from the catalog's Open Food Facts terms (``catalog.category_terms``,
  term -> synonyms and broader terms). A term with each of its synonyms and broader terms is a
  positive pair (singular/plural spellings left out: every threshold passes them). For each positive
  whose term has a known department (its product type's top category, or the taxonomy node it
  names; the catch-all "missing" and "other" do not count), one term of another department, drawn
  with a seeded generator, makes a negative pair.
- ``substitute_category_level``: substitutes are terms under one Open Food Facts broader term
  ("soy milk" and "almond milk" under "plant milks"; broader terms over more than 15 terms left
  out), negatives again a term of another department. The substitute category test runs at the
  department and at the aisle level; the level whose pass/fail agrees best (F1) with the labels wins
  (a tie goes to the department, the more lenient). The same pairs give the substitutes' recall at
  the chosen rewrite threshold.

A threshold maximises F1 or, with a target precision, is the one with the best recall whose
precision reaches it. Candidate thresholds are the observed scores rounded down to 3 decimals,
so a printed threshold reproduces its printed precision and recall exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from services.catalog.artifacts import Catalog
from services.catalog.lexicons import plural_variants
from services.catalog.model import CategoryPath
from services.errors import QuError
from services.gold.model import GoldQuery
from services.guardrails.checks import Guardrails
from services.guardrails.embedding_cache import EmbeddingCache, TextEncoder
from services.guardrails.thresholds import CategoryLevel, GuardrailThresholds
from services.normalize import normalize_query

DECIMALS = 3
CATCH_ALL_DEPARTMENTS = frozenset({"missing", "other"})
LEVELS: tuple[CategoryLevel, ...] = ("department", "aisle")
NegativeSource = Literal["nearest", "other-department"]


class CalibrationError(QuError):
    """The labelled data cannot calibrate a threshold (no positives or no negatives)."""


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What a threshold keeps: scores >= ``threshold`` are predicted positive."""

    threshold: float
    precision: float
    recall: float
    f1: float
    true_positives: int
    false_positives: int
    positives: int
    negatives: int

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def operating_point(positives: Sequence[float], negatives: Sequence[float], threshold: float) -> OperatingPoint:
    tp = sum(1 for s in positives if s >= threshold)
    fp = sum(1 for s in negatives if s >= threshold)
    return _point(threshold, tp, fp, len(positives), len(negatives))


def _point(threshold: float, tp: int, fp: int, n_pos: int, n_neg: int) -> OperatingPoint:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return OperatingPoint(threshold, precision, recall, f1, tp, fp, n_pos, n_neg)


def candidate_points(positives: Sequence[float], negatives: Sequence[float]) -> list[OperatingPoint]:
    """The operating point at every observed score rounded down to ``DECIMALS``, lowest threshold first."""
    if not positives:
        raise CalibrationError("no positive examples: nothing to calibrate on")
    if not negatives:
        raise CalibrationError("no negative examples: every threshold would look perfect")
    scale = 10**DECIMALS
    thresholds = sorted({math.floor(s * scale) / scale for s in (*positives, *negatives)})
    pos = np.sort(np.asarray(positives, dtype=np.float64))
    neg = np.sort(np.asarray(negatives, dtype=np.float64))
    t = np.asarray(thresholds, dtype=np.float64)
    tp = len(pos) - np.searchsorted(pos, t, side="left")  # how many scores are >= t
    fp = len(neg) - np.searchsorted(neg, t, side="left")
    return [_point(float(t[i]), int(tp[i]), int(fp[i]), len(pos), len(neg)) for i in range(len(t))]


def choose_threshold(
    positives: Sequence[float], negatives: Sequence[float], *, target_precision: float | None = None
) -> tuple[OperatingPoint, bool]:
    """The chosen operating point and whether it meets the target precision (always True without one).

    Without a target: the best F1, the lowest threshold among equals (it keeps more). With one: the
    best recall among points reaching the precision (then the best precision); when none reaches it,
    the most precise point, reported as not reached.
    """
    points = candidate_points(positives, negatives)
    if target_precision is None:
        return max(points, key=lambda p: (p.f1, -p.threshold)), True
    reaching = [p for p in points if p.precision >= target_precision]
    if reaching:
        return max(reaching, key=lambda p: (p.recall, p.precision, -p.threshold)), True
    return max(points, key=lambda p: (p.precision, p.recall, -p.threshold)), False


def curve(positives: Sequence[float], negatives: Sequence[float], step: float = 0.05) -> list[OperatingPoint]:
    """Operating points on a regular grid, for the report."""
    grid = [round(i * step, 4) for i in range(round(1 / step) + 1)]
    return [operating_point(positives, negatives, t) for t in grid]


# --- the labelled examples --------------------------------------------------------------------


@dataclass(slots=True)
class CategoryExamples:
    positives: list[float] = field(default_factory=list)
    negatives: list[float] = field(default_factory=list)
    queries: int = 0
    skipped: int = 0  # labelled queries with no gold path, or one outside the taxonomy


def category_examples(
    guardrails: Guardrails, gold: Iterable[GoldQuery], top_k: int, negatives: NegativeSource = "nearest"
) -> CategoryExamples:
    """Similarity of each query to its gold path (positive) and to ``top_k`` other leaf paths (negatives).

    ``negatives``: "nearest", the query's nearest leaf paths other than the gold; "other-department",
    its nearest leaf paths outside the gold's department (wrong for sure, not a sibling aisle).
    """
    examples = CategoryExamples()
    golds: dict[str, CategoryPath] = {}
    for record in gold:
        query = normalize_query(record.query)
        if not query or query in golds:
            continue
        if record.category is None or record.category not in guardrails.catalog.taxonomy:
            examples.skipped += 1
            continue
        golds[query] = record.category
    if not golds:
        return examples
    leaves = guardrails.leaf_paths
    queries = sorted(golds)
    scores = guardrails.query_matrix(queries) @ guardrails.path_matrix(leaves).T
    column = {path: i for i, path in enumerate(leaves)}
    for row, query in enumerate(queries):
        path = golds[query]
        gold_score = (
            float(scores[row, column[path]]) if path in column else guardrails.category_similarities(query, [path])[0]
        )
        examples.positives.append(gold_score)
        ranked = [leaves[int(i)] for i in np.argsort(-scores[row], kind="stable")]
        if negatives == "nearest":  # the top-k candidates, less the gold one
            others = [p for p in ranked[:top_k] if p != path]
        else:
            others = [p for p in ranked if p[0] != path[0]][:top_k]
        examples.negatives.extend(float(scores[row, column[p]]) for p in others)
    examples.queries = len(queries)
    return examples


@dataclass(slots=True)
class RewriteExamples:
    positives: list[tuple[str, str]] = field(default_factory=list)
    negatives: list[tuple[str, str]] = field(default_factory=list)
    terms: int = 0


def term_department(catalog: Catalog, term: str) -> str | None:
    """The department a term's products sit in, from the product-type lexicon or a taxonomy node's name."""
    entry = catalog.types.lookup(term)
    if entry is not None and entry.categories:
        department = entry.top_categories(1)[0][0][0]
    else:
        key = normalize_query(term)
        department = next((n.path[0] for n in sorted(catalog.taxonomy, key=lambda n: n.path) if n.name == key), "")
    return department if department and department not in CATCH_ALL_DEPARTMENTS else None


def _departments(catalog: Catalog, terms: dict[str, Any]) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """Each term's department (None when the catalog places it nowhere), and the terms of each department."""
    departments = {t: term_department(catalog, t) for t in sorted(terms)}
    by_department: dict[str, list[str]] = {}
    for term, department in departments.items():
        if department is not None:
            by_department.setdefault(department, []).append(term)
    return departments, by_department


def rewrite_examples(catalog: Catalog, seed: int = 0) -> RewriteExamples:
    """Positive and negative (term, rewrite) pairs from the catalog's Open Food Facts terms (module docstring)."""
    examples = RewriteExamples()
    terms = {normalize_query(t): v for t, v in catalog.category_terms.items() if isinstance(v, dict)}
    departments, by_department = _departments(catalog, terms)
    rng = random.Random(seed)
    for term in sorted(terms):
        related = [*terms[term].get("synonyms", []), *terms[term].get("broader", [])]
        same = set(plural_variants(term))
        pairs = [r for r in dict.fromkeys(normalize_query(str(r)) for r in related) if r and r not in same]
        if not pairs:
            continue
        examples.terms += 1
        examples.positives.extend((term, r) for r in pairs)
        department = departments[term]
        others = [d for d in sorted(by_department) if d != department]
        if department is None or not others:
            continue
        for _ in pairs:
            other = rng.choice(others)
            examples.negatives.append((term, rng.choice(by_department[other])))
    return examples


MAX_SIBLINGS = 15  # a broader term over more terms than this ("plant based foods") groups no substitutes
SIBLINGS_PER_TERM = 3


def substitute_examples(catalog: Catalog, seed: int = 0) -> RewriteExamples:
    """Substitute pairs: two terms under one Open Food Facts broader term ("soy milk", "almond milk" under
    "plant milks") are positives; a term of another department, drawn with a seeded generator, is a negative."""
    examples = RewriteExamples()
    terms = {normalize_query(t): v for t, v in catalog.category_terms.items() if isinstance(v, dict)}
    groups: dict[str, set[str]] = {}
    for term, value in terms.items():
        for broader in value.get("broader", []):
            groups.setdefault(normalize_query(str(broader)), set()).add(term)
    departments, by_department = _departments(catalog, terms)
    rng = random.Random(seed)
    for term in sorted(terms):
        same = set(plural_variants(term))
        siblings = sorted(
            {s for g in groups.values() if term in g and len(g) <= MAX_SIBLINGS for s in g if s not in same}
        )
        if not siblings:
            continue
        chosen = rng.sample(siblings, min(SIBLINGS_PER_TERM, len(siblings)))
        examples.terms += 1
        examples.positives.extend((term, s) for s in chosen)
        department = departments[term]
        others = [d for d in sorted(by_department) if d != department]
        if department is None or not others:
            continue
        for _ in chosen:
            examples.negatives.append((term, rng.choice(by_department[rng.choice(others)])))
    return examples


# --- the whole calibration --------------------------------------------------------------------


@dataclass(slots=True)
class LevelFigures:
    level: CategoryLevel
    point: OperatingPoint  # threshold 0: "predicted positive" = passes the substitute category test


@dataclass(slots=True)
class CalibrationReport:
    category: OperatingPoint
    category_reached: bool
    category_curve: list[OperatingPoint]
    category_queries: int
    category_skipped: int
    rewrite: OperatingPoint
    rewrite_reached: bool
    rewrite_curve: list[OperatingPoint]
    rewrite_terms: int
    substitutes_at_threshold: OperatingPoint  # sibling-term substitutes at the chosen rewrite threshold
    levels: list[LevelFigures]
    substitute_level: CategoryLevel
    top_k: int
    negatives: NegativeSource
    target_precision: float | None
    seed: int
    model_id: str

    def settings_lines(self) -> list[str]:
        return [
            f"QU_CATEGORY_MIN_SIMILARITY={self.category.threshold}",
            f"QU_REWRITE_MIN_SIMILARITY={self.rewrite.threshold}",
            f"QU_SUBSTITUTE_CATEGORY_LEVEL={self.substitute_level}",
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "target_precision": self.target_precision,
            "top_k": self.top_k,
            "negatives": self.negatives,
            "seed": self.seed,
            "category_min_similarity": {
                **self.category.to_json(),
                "target_reached": self.category_reached,
                "queries": self.category_queries,
                "skipped": self.category_skipped,
                "curve": [p.to_json() for p in self.category_curve],
            },
            "rewrite_min_similarity": {
                **self.rewrite.to_json(),
                "target_reached": self.rewrite_reached,
                "terms": self.rewrite_terms,
                "curve": [p.to_json() for p in self.rewrite_curve],
            },
            "substitutes_at_rewrite_threshold": self.substitutes_at_threshold.to_json(),
            "substitute_category_level": {
                "chosen": self.substitute_level,
                "levels": {f.level: f.point.to_json() for f in self.levels},
            },
            "settings": self.settings_lines(),
        }


def calibrate(
    catalog: Catalog,
    embedder: TextEncoder,
    gold: Iterable[GoldQuery],
    *,
    top_k: int = 5,
    negatives: NegativeSource = "nearest",
    target_precision: float | None = None,
    seed: int = 0,
    base: GuardrailThresholds | None = None,
) -> CalibrationReport:
    base = base or GuardrailThresholds()
    cache = EmbeddingCache(embedder)
    guardrails = Guardrails(catalog, base, embedder=cache)
    categories = category_examples(guardrails, gold, top_k, negatives)
    if not categories.positives:
        raise CalibrationError("no labelled query has a gold category path of this catalog's taxonomy")
    category, category_reached = choose_threshold(
        categories.positives, categories.negatives, target_precision=target_precision
    )

    pairs = rewrite_examples(catalog, seed)
    if not pairs.positives or not pairs.negatives:
        raise CalibrationError("the catalog's category terms give no rewrite pairs: import it with --terms")
    cache.warm([text for pair in (*pairs.positives, *pairs.negatives) for text in pair])
    pos = [guardrails.text_similarity(a, b) for a, b in pairs.positives]
    neg = [guardrails.text_similarity(a, b) for a, b in pairs.negatives]
    rewrite, rewrite_reached = choose_threshold(pos, neg, target_precision=target_precision)

    substitutes = substitute_examples(catalog, seed)
    cache.warm([text for pair in (*substitutes.positives, *substitutes.negatives) for text in pair])
    substitutes_at_threshold = operating_point(
        [guardrails.text_similarity(a, b) for a, b in substitutes.positives],
        [guardrails.text_similarity(a, b) for a, b in substitutes.negatives],
        rewrite.threshold,
    )
    levels: list[LevelFigures] = []
    for level in LEVELS:
        judge = Guardrails(catalog, _with_level(base, level), embedder=cache)

        def passes(a: str, b: str, judge: Guardrails = judge) -> float:
            return 1.0 if judge.substitute_problem(judge.text_categories(a), b) is None else 0.0

        levels.append(
            LevelFigures(
                level,
                operating_point(
                    [passes(a, b) for a, b in substitutes.positives],
                    [passes(a, b) for a, b in substitutes.negatives],
                    1.0,
                ),
            )
        )
    best = max(levels, key=lambda f: (f.point.f1, f.level == "department"))
    return CalibrationReport(
        category,
        category_reached,
        curve(categories.positives, categories.negatives),
        categories.queries,
        categories.skipped,
        rewrite,
        rewrite_reached,
        curve(pos, neg),
        pairs.terms,
        substitutes_at_threshold,
        levels,
        best.level,
        top_k,
        negatives,
        target_precision,
        seed,
        embedder.model_id,
    )


def _with_level(base: GuardrailThresholds, level: CategoryLevel) -> GuardrailThresholds:
    return GuardrailThresholds(
        base.category_min_similarity,
        base.max_categories,
        base.rewrite_min_similarity,
        base.substitute_category_top_k,
        level,
    )
