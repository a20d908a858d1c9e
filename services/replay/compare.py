"""Candidate against baseline, event by event: agreement, operations, and how sure each difference is.

Both replays answer the same events in the same order (``position``), so every comparison is paired:
a difference is the mean of per-event differences, its 95% interval comes from a paired bootstrap
(events resampled with replacement, both answers of an event kept together), and a binary outcome
(degraded, dead-lettered) also gets McNemar's exact test on the discordant pairs. A delta is called
a win or a regression only when its interval excludes zero; otherwise it is "no clear difference".
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from scipy.stats import binomtest

from services.catalog.artifacts import Catalog
from services.catalog.retrieval import CatalogRetriever
from services.conversions.reader import ConversionLogReader
from services.domain import Role, Understanding
from services.evaluation.categories import CategoryAccuracy
from services.evaluation.rewrites import ConvertedCategories, RewriteScores
from services.gold import GoldQuery
from services.normalize import normalize_query
from services.replay.runner import read_rows
from services.span_scores import SpanScores

RESAMPLES = 2000
Row = dict[str, Any]
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Delta:
    """candidate − baseline of a per-event figure, with its paired-bootstrap interval."""

    name: str
    candidate: float
    baseline: float
    delta: float
    low: float
    high: float
    p_value: float | None  # McNemar's exact test, for a yes/no figure
    higher_is_better: bool
    events: int = 0  # the paired events the figure is over

    @property
    def verdict(self) -> str:
        if self.low <= 0 <= self.high:
            return "no clear difference"
        better = (self.delta > 0) == self.higher_is_better
        return "win" if better else "regression"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def paired_bootstrap(
    candidate: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean difference, low, high): the percentile interval of the mean of per-event differences."""
    a, b = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired figures need the same events: {a.size} candidate values, {b.size} baseline")
    if a.size == 0:
        return 0.0, 0.0, 0.0
    differences = a - b
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, differences.size, size=(resamples, differences.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(differences.mean()), float(low), float(high)


def mcnemar_p(candidate: Sequence[bool], baseline: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value: of the events where the two disagree, is the split even?"""
    only_candidate = sum(1 for c, b in zip(candidate, baseline, strict=True) if c and not b)
    only_baseline = sum(1 for c, b in zip(candidate, baseline, strict=True) if b and not c)
    discordant = only_candidate + only_baseline
    if discordant == 0:
        return 1.0
    return float(binomtest(only_candidate, discordant, 0.5).pvalue)


def binary_delta(
    name: str, candidate: Sequence[bool], baseline: Sequence[bool], *, higher_is_better: bool, seed: int = 0
) -> Delta:
    a, b = [float(x) for x in candidate], [float(x) for x in baseline]
    delta, low, high = paired_bootstrap(a, b, seed=seed)
    return Delta(
        name,
        float(np.mean(a)) if a else 0.0,
        float(np.mean(b)) if b else 0.0,
        delta,
        low,
        high,
        mcnemar_p(candidate, baseline),
        higher_is_better,
        len(a),
    )


def _understanding(row: dict[str, Any]) -> dict[str, Any]:
    text = row.get("understanding")
    return _parsed(text) if text else {}


def top_category(row: Row) -> tuple[str, ...] | None:
    """The first category path of a replay row's answer, or None."""
    return _top_category(_understanding(row))


@functools.lru_cache(maxsize=65_536)
def _parsed(text: str) -> dict[str, Any]:
    # Every figure reads a row's understanding, some per segment as well: each is parsed once. The dict is shared
    # by its callers, which only read it.
    data: dict[str, Any] = orjson.loads(text)
    return data


def _spans(u: dict[str, Any], role: str | None = None) -> frozenset[tuple[str, str]]:
    return frozenset(
        (str(t["role"]), str(t["canonical"]).casefold()) for t in u.get("tags", []) if role is None or t["role"] == role
    )


def _top_category(u: dict[str, Any]) -> tuple[str, ...] | None:
    categories = u.get("categories") or []
    return tuple(categories[0]["path"]) if categories else None


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "p99_ms": round(float(p99), 3)}


def operations(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Source mix, dead letters and processing latency per source of one replay."""
    sources: dict[str, int] = {}
    latency: dict[str, list[float]] = {}
    for row in rows:
        source = row.get("source")
        if source:
            sources[source] = sources.get(source, 0) + 1
            if row.get("processing_ms") is not None:
                latency.setdefault(source, []).append(float(row["processing_ms"]))
    return {
        "events": len(rows),
        "sources": sources,
        "dead_letters": sum(1 for r in rows if r["outcome"] == "dead_letter"),
        "not_served": sum(1 for r in rows if r["outcome"] == "not_served"),
        "degraded": sum(1 for r in rows if r.get("degraded")),
        "latency_by_source": {s: _percentiles(v) for s, v in sorted(latency.items())},
    }


ROLES = tuple(role.value for role in Role)


HEAD_SHARE, TORSO_SHARE = 0.5, 0.8  # the most frequent queries making 50% of the traffic; then up to 80%; the tail


def segments(queries: Sequence[str | None]) -> list[str]:
    """head, torso or tail for each event, by its normalized query's frequency in the window: the most frequent
    queries that make the first half of the traffic are the head, the next 30% the torso, the rest the tail."""
    counts: dict[str, int] = {}
    for q in queries:
        if q:
            counts[q] = counts.get(q, 0) + 1
    total = sum(counts.values())
    segment_of: dict[str, str] = {}
    running = 0
    for query, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        share = running / total if total else 0.0
        segment_of[query] = "head" if share < HEAD_SHARE else "torso" if share < TORSO_SHARE else "tail"
        running += n
    return [segment_of.get(q or "", "none") for q in queries]


def _agreement(pairs: list[tuple[Row, Row]]) -> dict[str, Any]:
    out: dict[str, Any] = {"events": len(pairs)}
    if pairs:
        out["exact"] = _share(_spans(c) == _spans(b) and _top_category(c) == _top_category(b) for c, b in pairs)
        out["tags"] = _share(_spans(c) == _spans(b) for c, b in pairs)
        out["per_role"] = {role: _share(_spans(c, role) == _spans(b, role) for c, b in pairs) for role in ROLES}
        out["top_category"] = _share(_top_category(c) == _top_category(b) for c, b in pairs)
    return out


def by_segment(both: list[tuple[Row, Row]], pairs: list[tuple[Row, Row]]) -> dict[str, Any]:
    """Agreement per segment, traffic-weighted (every event) and per distinct query (its first event)."""
    labels = segments([c.get("normalized_query") for c, _ in both])
    out: dict[str, Any] = {}
    for segment in ("head", "torso", "tail"):
        chosen = [i for i, label in enumerate(labels) if label == segment]
        first_of_query: dict[str, int] = {}
        for i in chosen:
            first_of_query.setdefault(str(both[i][0].get("normalized_query")), i)
        out[segment] = {
            "traffic": _agreement([pairs[i] for i in chosen]),
            "queries": _agreement([pairs[i] for i in first_of_query.values()]),
        }
    return out


@dataclass(frozen=True, slots=True)
class RewriteJudge:
    """What rewrite precision is judged with (services/evaluation/rewrites.py): the catalog's keyword search and
    the conversion history; without a history, coverage only."""

    retriever: CatalogRetriever
    history: ConvertedCategories | None


def score_gold(rows: Sequence[Row], gold: Sequence[GoldQuery], judge: RewriteJudge | None = None) -> dict[str, Any]:
    """One replay's answers (its rows, services.replay.runner.read_rows) scored against ``gold``, for the
    events whose typed query a gold record labels (offsets compare directly: the handler maps tags back onto
    the query as typed). Traffic-weighted. Rewrite coverage per type, and precision when ``judge`` has a
    conversion history, as `qu eval report` measures them."""
    by_query = {g.query: g for g in gold}
    spans, categories, rewrites = SpanScores(), CategoryAccuracy(), RewriteScores()
    retriever = judge.retriever if judge is not None else CatalogRetriever([])
    history: ConvertedCategories = judge.history if judge is not None and judge.history is not None else _NoHistory()
    matched = 0
    for row in rows:
        g = by_query.get(row.get("query") or "")
        if g is None or row["outcome"] != "annotation":
            continue
        matched += 1
        u = Understanding.from_json(_understanding(row))
        spans.add(g.spans, u.tags, g.kind)
        categories.add(g.category, u.categories, g.kind)
        rewrites.add(str(row.get("normalized_query") or ""), u, retriever, history)
    judging = judge is not None and judge.history is not None
    return {
        "events": matched,
        "spans": spans.to_json(),
        "categories": categories.to_json(),
        "rewrites": rewrites.to_json(judging=judging),
    }


class _NoHistory:
    def get(self, query: str) -> None:
        return None


def gold_exact(row: Row, gold: dict[str, GoldQuery]) -> bool:
    """Every gold span found, nothing more (role, start, end), for one event."""
    g = gold.get(row.get("query") or "")
    if g is None or row["outcome"] != "annotation":
        return False
    tags = Understanding.from_json(_understanding(row)).tags
    return {(t.role, t.start, t.end) for t in tags} == {(t.role, t.start, t.end) for t in g.spans}


@dataclass(frozen=True, slots=True)
class Conversion:
    """What the shopper bought after a search: the product's category path and brand (from the catalog)."""

    category: tuple[str, ...]
    brand: str


ConversionKey = tuple[str, str]  # (session_id, normalized query): a purchase after that search in that session


def load_conversions(path: Path, catalog: Catalog) -> dict[ConversionKey, Conversion]:
    """The conversion log (``qu traffic`` writes one; any log `qu conversions build` reads) keyed by session and
    normalized query, the first purchase of each; records naming no product of the catalog are skipped."""
    products = {p.product_id: p for p in catalog.products}
    out: dict[ConversionKey, Conversion] = {}
    for record in ConversionLogReader(path, products, skip_invalid=True):
        product = products[record.product_id]
        out.setdefault((record.session_id, record.query), Conversion(tuple(product.category_path), product.brand))
    return out


def _key(row: Row) -> ConversionKey:
    return (str(row.get("session_id") or ""), str(row.get("normalized_query") or ""))


def converted_in_top(row: Row, bought: Conversion, k: int = 3) -> bool:
    """The bought product's category among the annotation's top ``k`` category paths (or below one of them)."""
    paths = [tuple(c["path"]) for c in _understanding(row).get("categories", [])[:k]]
    return any(bought.category[: len(path)] == path for path in paths if path)


def converted_brand_tagged(row: Row, bought: Conversion) -> bool:
    """The annotation tagged the bought product's brand."""
    brands = {str(t["canonical"]).casefold() for t in _understanding(row).get("tags", []) if t["role"] == "brand"}
    return bought.brand.casefold() in brands


def later_searches(rows: Sequence[Row]) -> dict[int, frozenset[str]]:
    """For each event (by position) with a later search in its session: the normalized queries searched after it.
    Rows are in the window's order: by Kafka timestamp (services.replay.runner.window)."""
    by_session: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("session_id") and row.get("normalized_query"):
            by_session.setdefault(str(row["session_id"]), []).append(row)
    out: dict[int, frozenset[str]] = {}
    for searches in by_session.values():
        for i, row in enumerate(searches[:-1]):
            later = frozenset(str(r["normalized_query"]) for r in searches[i + 1 :]) - {row["normalized_query"]}
            if later:
                out[int(row["position"])] = later
    return out


def anticipated(row: Row, later: frozenset[str]) -> bool:
    """One of the annotation's rewrites is a query the shopper searched later in the session."""
    rewrites = {normalize_query(str(r["query"])) for r in _understanding(row).get("rewrites", [])}
    return bool(rewrites & later)


def compare(
    candidate_dir: Path,
    baseline_dir: Path,
    *,
    gold: Sequence[GoldQuery] | None = None,
    conversions: dict[ConversionKey, Conversion] | None = None,
    judge: RewriteJudge | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The paired comparison of two replays of the same window (their ``position``s must match)."""
    candidate = read_rows(candidate_dir).to_pylist()
    baseline = read_rows(baseline_dir).to_pylist()
    if [r["position"] for r in candidate] != [r["position"] for r in baseline]:
        raise ValueError(
            f"{candidate_dir} and {baseline_dir} did not replay the same events "
            f"({len(candidate)} and {len(baseline)} rows): replay both over the same window"
        )
    both = [
        (c, b)
        for c, b in zip(candidate, baseline, strict=True)
        if c["outcome"] == "annotation" and b["outcome"] == "annotation"
    ]
    pairs = [(_understanding(c), _understanding(b)) for c, b in both]
    agreement = _agreement(pairs)
    # Deltas over the events both sides can speak for: an event the baseline never served is not one it
    # answered well or badly (it is counted in the operations instead).
    known = [
        (c, b) for c, b in zip(candidate, baseline, strict=True) if "not_served" not in (c["outcome"], b["outcome"])
    ]

    def delta(
        name: str, flag: Callable[[Row, Row], bool], *, higher_is_better: bool, over: list[tuple[Row, Row]]
    ) -> Delta:
        """``flag(answer, event)`` of each side over the pairs ``over``; ``event`` (the candidate's row) names
        the event both answered, for figures that look up what happened after it."""
        return binary_delta(
            name,
            [flag(c, c) for c, _ in over],
            [flag(b, c) for c, b in over],
            higher_is_better=higher_is_better,
            seed=seed,
        )

    later = later_searches(candidate)

    def traffic_figures(over: list[tuple[Row, Row]]) -> list[Delta]:
        """The figures that need no labels, over the pairs ``over``."""
        figures = [
            delta("degraded", lambda r, _: bool(r.get("degraded")), higher_is_better=False, over=over),
            delta("dead_lettered", lambda r, _: r["outcome"] == "dead_letter", higher_is_better=False, over=over),
            delta(
                "has_category", lambda r, _: bool(_top_category(_understanding(r))), higher_is_better=True, over=over
            ),
        ]
        if conversions:
            # What the shopper bought after the search (a branded product for the brand figure).
            bought = [(c, b) for c, b in over if _key(c) in conversions]
            branded = [(c, b) for c, b in bought if conversions[_key(c)].brand]
            figures += [
                delta(
                    "converted_category_in_top3",
                    lambda r, e: converted_in_top(r, conversions[_key(e)]),
                    higher_is_better=True,
                    over=bought,
                ),
                delta(
                    "converted_brand_tagged",
                    lambda r, e: converted_brand_tagged(r, conversions[_key(e)]),
                    higher_is_better=True,
                    over=branded,
                ),
            ]
        # Did a rewrite anticipate what the shopper searched next in the session?
        followed = [(c, b) for c, b in over if int(c["position"]) in later]
        if followed:
            figures.append(
                delta(
                    "rewrite_anticipated_a_later_search",
                    lambda r, e: anticipated(r, later[int(e["position"])]),
                    higher_is_better=True,
                    over=followed,
                )
            )
        return figures

    deltas = traffic_figures(known)
    segment_of = segments([c.get("normalized_query") for c, _ in known])
    deltas_by_segment = {
        segment: [
            d.as_dict() for d in traffic_figures([p for p, s in zip(known, segment_of, strict=True) if s == segment])
        ]
        for segment in ("head", "torso", "tail")
    }
    gold_figures: dict[str, Any] | None = None
    if gold is not None:
        labels = {g.query: g for g in gold}
        labelled = [(c, b) for c, b in known if (c.get("query") or "") in labels]
        deltas.append(
            delta("gold_exact_tags", lambda r, _: gold_exact(r, labels), higher_is_better=True, over=labelled)
        )
        gold_figures = {
            "candidate": score_gold(candidate, gold, judge),
            "baseline": score_gold(baseline, gold, judge),
        }
        # By how the query was phrased, where the labels say (qu traffic's kinds: brand_product, misspelled, ...).
        kinds: dict[str, list[tuple[Row, Row]]] = {}
        for c, b in both:
            kind = labels[c["query"]].kind if (c.get("query") or "") in labels else ""
            if kind:
                kinds.setdefault(kind, []).append((_understanding(c), _understanding(b)))
        gold_figures["agreement_by_kind"] = {kind: _agreement(pairs) for kind, pairs in sorted(kinds.items())}
    return {
        "events_compared": len(known),
        "events_with_conversion": sum(1 for c, _ in known if conversions and _key(c) in conversions),
        "candidate": str(candidate_dir.name),
        "baseline": str(baseline_dir.name),
        "agreement": agreement,
        "segments": by_segment(both, pairs),
        "deltas_by_segment": deltas_by_segment,
        "gold": gold_figures,
        "deltas": [d.as_dict() for d in deltas],
        "operations": {"candidate": operations(candidate), "baseline": operations(baseline)},
        "disagreements": _disagreements(both, pairs, {g.query: g for g in gold} if gold is not None else None),
    }


def _share(flags: Any) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else 0.0


def _verdict(c_row: Row, b_row: Row, labels: dict[str, GoldQuery] | None) -> str:
    """Which side a disagreement favours: by the gold label where one names the query, else by the degraded
    flag (a fallback answer loses to a real one); "differs" when nothing says."""
    if labels is not None and (c_row.get("query") or "") in labels:
        candidate_right, baseline_right = gold_exact(c_row, labels), gold_exact(b_row, labels)
        if candidate_right != baseline_right:
            return "win" if candidate_right else "regression"
    if bool(c_row.get("degraded")) != bool(b_row.get("degraded")):
        return "regression" if c_row.get("degraded") else "win"
    return "differs"


def _disagreements(
    both: list[tuple[Row, Row]], pairs: list[tuple[Row, Row]], labels: dict[str, GoldQuery] | None, limit: int = 25
) -> list[Row]:
    """The events on which the two answered differently, both answers side by side: the first ``limit``
    regressions, then wins, then other differences, each the most frequent queries first."""
    frequency: Counter[str] = Counter(str(c.get("normalized_query")) for c, _ in both)
    found: dict[str, list[Row]] = {"regression": [], "win": [], "differs": []}
    seen: set[str] = set()
    for (c_row, b_row), (c, b) in zip(both, pairs, strict=True):
        query = str(c_row.get("normalized_query"))
        if query in seen or (_spans(c) == _spans(b) and _top_category(c) == _top_category(b)):
            continue
        seen.add(query)  # one line per query: its first event stands for the others
        verdict = _verdict(c_row, b_row, labels)
        found[verdict].append(
            {
                "verdict": verdict,
                "events": frequency[query],
                "event_id": c_row["event_id"],
                "query": c_row["query"],
                "candidate": {"tags": sorted(_spans(c)), "category": _top_category(c), "source": c_row["source"]},
                "baseline": {"tags": sorted(_spans(b)), "category": _top_category(b), "source": b_row["source"]},
            }
        )
    out: list[Row] = []
    for verdict in ("regression", "win", "differs"):
        out += sorted(found[verdict], key=lambda r: -int(r["events"]))[:limit]
    return out
