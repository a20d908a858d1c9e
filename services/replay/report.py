"""The replay report: one self-contained HTML file (and the same figures as JSON) a data scientist opens.

Charts are drawn by matplotlib (Agg, no display) and embedded as PNG data URIs; styles are inline and
there is no script, so the file opens offline, mailed or attached to a ticket. What it shows, in the
order a reader asks: which is better and how sure (the deltas with their 95% intervals), how much the
two agree (per role, category), what served each (source mix), how fast (processing latency per
source), and the events on which they differ, both answers side by side.
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")  # before pyplot: no display here or on a CI machine
import matplotlib.pyplot as plt
import numpy as np
import orjson

from services.replay.compare import RESAMPLES, Row, top_category
from services.replay.runner import read_rows

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
CHARTS = ("deltas", "segments", "agreement", "confusion", "sources", "latency")
CONFUSION_PATHS = 8  # the baseline's most frequent top categories shown in the confusion chart

_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Replay: {{ c.candidate }} vs {{ c.baseline }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table { border-collapse: collapse; width: 100%; } td, th { border-bottom: 1px solid #ddd; padding: .3rem .5rem;
text-align: left; vertical-align: top; } .win { color: #176b2c; font-weight: 600; }
.regression { color: #a3141e; font-weight: 600; } figure { margin: 1rem 0; } img { max-width: 100%; }
code { font-size: .9em; }
</style></head><body>
<h1>Replay of {{ events }} events: <code>{{ c.candidate }}</code> against <code>{{ c.baseline }}</code></h1>
<h2>Which is better, and how sure</h2>
<table><tr><th>figure</th><th>events</th><th>candidate</th><th>baseline</th><th>delta [95% interval]</th><th>p</th>
<th>verdict</th></tr>
{% for d in c.deltas %}<tr><td>{{ d.name }}</td><td>{{ d.events }}</td><td>{{ "%.4f"|format(d.candidate) }}</td>
<td>{{ "%.4f"|format(d.baseline) }}</td><td>{{ "%+.4f"|format(d.delta) }} [{{ "%+.4f"|format(d.low) }},
{{ "%+.4f"|format(d.high) }}]</td><td>{{ "%.3g"|format(d.p_value) if d.p_value is not none else "" }}</td>
<td class="{{ d.verdict.split()[0] }}">{{ d.verdict }}</td></tr>{% endfor %}</table>
{% for name in charts %}<figure id="chart-{{ name }}">
<img alt="{{ name }}" src="data:image/png;base64,{{ images[name] }}"></figure>{% endfor %}
<h2>Agreement by segment</h2>
<p>Head: the most frequent queries making half the traffic; torso: the next 30%; tail: the rest.</p>
<table><tr><th>segment</th><th>weighted by</th><th>events</th><th>exact</th><th>tags</th><th>top category</th></tr>
{% for name, seg in c.segments.items() %}{% for weight in ("traffic", "queries") %}{% set a = seg[weight] %}
<tr><td>{{ name }}</td><td>{{ "traffic" if weight == "traffic" else "distinct query" }}</td><td>{{ a.events }}</td>
<td>{{ a.get("exact", "") }}</td><td>{{ a.get("tags", "") }}</td><td>{{ a.get("top_category", "") }}</td></tr>
{% endfor %}{% endfor %}</table>
{% if c.gold %}<h2>Against the gold labels</h2>
<table><tr><th></th><th>events labelled</th><th>span P / R / F1</th><th>category top-1 / top-3</th>
<th>rewrite coverage / precision</th></tr>
{% for side in ("candidate", "baseline") %}{% set g = c.gold[side] %}<tr><td>{{ side }}</td><td>{{ g.events }}</td>
<td>{{ g.spans.precision }} / {{ g.spans.recall }} / {{ g.spans.f1 }}</td>
<td>{{ g.categories.get("top1", "") }} / {{ g.categories.get("top3", "") }}</td>
<td>{% for t, r in g.rewrites.per_type.items() %}{{ t }} {{ r.coverage }} /
{{ "–" if r.precision is none else r.precision }}{% if not loop.last %}<br>{% endif %}{% endfor %}</td></tr>
{% endfor %}</table>
{% if c.gold.agreement_by_kind %}<p>Agreement by how the labelled query was phrased:</p>
<table><tr><th>kind</th><th>events</th><th>exact</th><th>tags</th><th>top category</th></tr>
{% for kind, a in c.gold.agreement_by_kind.items() %}<tr><td>{{ kind }}</td><td>{{ a.events }}</td>
<td>{{ a.get("exact", "") }}</td><td>{{ a.get("tags", "") }}</td><td>{{ a.get("top_category", "") }}</td></tr>
{% endfor %}</table>{% endif %}{% endif %}
<h2>Top regressions and wins ({{ c.disagreements|length }} queries, the most frequent first)</h2>
<p>By the gold label where one names the query, else by the degraded flag; "differs" when neither says.</p>
<table><tr><th>verdict</th><th>query (events)</th><th>candidate</th><th>baseline</th></tr>
{% for row in c.disagreements %}<tr><td class="{{ row.verdict }}">{{ row.verdict }}</td>
<td>{{ row.query }} ({{ row.events }})</td>
<td>{{ row.candidate.tags|map("join", "=")|join(", ") }}<br>{{ (row.candidate.category or [])|join(" › ") }}
<br><small>{{ row.candidate.source }}</small></td>
<td>{{ row.baseline.tags|map("join", "=")|join(", ") }}<br>{{ (row.baseline.category or [])|join(" › ") }}
<br><small>{{ row.baseline.source }}</small></td></tr>{% endfor %}</table>
<p><small>Paired bootstrap intervals over events ({{ resamples }} resamples); p from McNemar's exact test. A delta is
a win or a regression only when its interval excludes zero. Figures: {{ json_name }}.</small></p>
</body></html>
"""
)


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _deltas_chart(comparison: dict[str, Any]) -> str:
    deltas = comparison["deltas"]
    figure, axes = plt.subplots(figsize=(8, 0.6 + 0.5 * len(deltas)))
    for i, d in enumerate(deltas):
        colour = {"win": "#176b2c", "regression": "#a3141e"}.get(d["verdict"], "#777777")
        axes.errorbar(
            d["delta"], i, xerr=[[d["delta"] - d["low"]], [d["high"] - d["delta"]]], fmt="o", color=colour, capsize=4
        )
    axes.axvline(0, color="#999999", linewidth=1)
    axes.set_yticks(range(len(deltas)), [d["name"] for d in deltas])
    axes.set_xlabel("candidate − baseline (share of events), 95% interval")
    axes.set_title("Deltas")
    return _png(figure)


def _segments_chart(comparison: dict[str, Any]) -> str:
    """Each label-free delta per segment with its interval: where the difference comes from."""
    rows = [
        (f"{d['name']} · {segment} ({d['events']})", d)
        for segment, deltas in comparison["deltas_by_segment"].items()
        for d in deltas
        if d["events"]
    ]
    figure, axes = plt.subplots(figsize=(8, 0.6 + 0.32 * max(len(rows), 1)))
    for i, (_label, d) in enumerate(rows):
        colour = {"win": "#176b2c", "regression": "#a3141e"}.get(d["verdict"], "#777777")
        axes.errorbar(
            d["delta"], i, xerr=[[d["delta"] - d["low"]], [d["high"] - d["delta"]]], fmt="o", color=colour, capsize=3
        )
    axes.axvline(0, color="#999999", linewidth=1)
    axes.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    axes.set_xlabel("candidate − baseline by segment (events), 95% interval")
    axes.set_title("Deltas by segment: head, torso, tail")
    return _png(figure)


def _confusion_chart(candidate: list[Row], baseline: list[Row]) -> str:
    """Top-1 category of the baseline (rows) against the candidate's (columns), for its most frequent paths."""

    def top(row: Row) -> str:
        path = top_category(row)
        return " › ".join(path[-2:]) if path else "(none)"

    pairs = [(top(b), top(c)) for c, b in zip(candidate, baseline, strict=True) if b["outcome"] == "annotation"]
    frequent = [path for path, _ in Counter(b for b, _ in pairs).most_common(CONFUSION_PATHS)]
    columns = [*frequent, "(other)"]
    counts = np.zeros((len(frequent), len(columns)))
    for b, c in pairs:
        if b in frequent:
            counts[frequent.index(b), columns.index(c) if c in frequent else len(frequent)] += 1
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(8, 0.9 + 0.45 * max(len(frequent), 1)))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    axes.set_yticks(range(len(frequent)), frequent, fontsize=8)
    for (i, j), value in np.ndenumerate(counts):
        if value:
            axes.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=7)
    axes.set_xlabel("candidate's top category")
    axes.set_ylabel("baseline's top category")
    axes.set_title("Category confusion, the baseline's most frequent paths (share of the row)")
    return _png(figure)


def _agreement_chart(comparison: dict[str, Any]) -> str:
    agreement = comparison["agreement"]
    names = ["exact", "tags", *(f"role: {r}" for r in agreement.get("per_role", {})), "top_category"]
    values = [agreement.get("exact", 0), agreement.get("tags", 0), *agreement.get("per_role", {}).values()]
    values.append(agreement.get("top_category", 0))
    figure, axes = plt.subplots(figsize=(8, 3))
    axes.barh(names, values, color="#3b6ea5")
    axes.set_xlim(0, 1)
    axes.set_xlabel(f"share of the {agreement['events']} events both annotated")
    axes.set_title("Agreement")
    return _png(figure)


def _sources_chart(comparison: dict[str, Any]) -> str:
    ops = comparison["operations"]
    sources = sorted(set(ops["candidate"]["sources"]) | set(ops["baseline"]["sources"]))
    figure, axes = plt.subplots(figsize=(8, 3))
    width = 0.4
    for k, (side, colour) in enumerate((("candidate", "#3b6ea5"), ("baseline", "#c4883a"))):
        counts = [ops[side]["sources"].get(s, 0) for s in sources]
        axes.bar([i + (k - 0.5) * width for i in range(len(sources))], counts, width, label=side, color=colour)
    axes.set_xticks(range(len(sources)), sources)
    axes.set_ylabel("events")
    axes.set_title("Source mix")
    axes.legend()
    return _png(figure)


def _latency_chart(candidate: list[Row], baseline: list[Row]) -> str:
    groups: list[list[float]] = []
    labels: list[str] = []
    for side, rows in (("candidate", candidate), ("baseline", baseline)):
        by_source: dict[str, list[float]] = {}
        for row in rows:
            if row["source"] and row["processing_ms"] is not None:
                by_source.setdefault(row["source"], []).append(row["processing_ms"])
        for source, values in sorted(by_source.items()):
            groups.append(values)
            labels.append(f"{side}\n{source}")
    figure, axes = plt.subplots(figsize=(8, 3.2))
    if groups:
        axes.boxplot(groups, whis=(1, 99), showfliers=False)
        axes.set_xticks(range(1, len(labels) + 1), labels)
    axes.set_ylabel("processing ms (1st-99th percentile whiskers)")
    axes.set_title("Latency per source")
    return _png(figure)


def render_report(out: Path, comparison: dict[str, Any], candidate_dir: Path, baseline_dir: Path) -> Path:
    """Write ``out/report.html`` and ``out/report.json`` for ``comparison`` (services.replay.compare)."""
    candidate, baseline = read_rows(candidate_dir).to_pylist(), read_rows(baseline_dir).to_pylist()
    images = {
        "deltas": _deltas_chart(comparison),
        "segments": _segments_chart(comparison),
        "agreement": _agreement_chart(comparison),
        "confusion": _confusion_chart(candidate, baseline),
        "sources": _sources_chart(comparison),
        "latency": _latency_chart(candidate, baseline),
    }
    events = comparison["operations"]["candidate"]["events"]
    (out / REPORT_JSON).write_bytes(orjson.dumps(comparison, option=orjson.OPT_INDENT_2))
    html = _TEMPLATE.render(
        c=comparison, events=events, charts=CHARTS, images=images, resamples=RESAMPLES, json_name=REPORT_JSON
    )
    path = out / REPORT_HTML
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(path)  # a reader never opens half a report
    return path
