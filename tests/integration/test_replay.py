"""`qu replay` on an archive: the worker's handler under a candidate, resumable, deterministic, compared."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.kafka_clients import producer, send_all
from services.replay.archive import ArchivedRecord, write_batch
from services.replay.compare import compare
from services.replay.runner import read_rows, replay, window
from services.replay.spec import parse_spec
from services.settings import Settings
from services.stack.tansu import TansuBroker
from services.stack.triton_server import TritonServer
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS

pytestmark = pytest.mark.integration

NINE = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
CHART_NAMES = ("deltas", "segments", "agreement", "confusion", "sources", "latency")  # services/replay/report.py
QUERIES = ["organic whole milk", "gluten free bread", "bananas", "greek yogurt", "cheddar cheese", "oat milk"]


def search(i: int, query: str) -> ArchivedRecord:
    value = orjson.dumps({"event_id": f"e{i}", "query": query, "session_id": f"s{i}"})
    return ArchivedRecord(
        SEARCH_EVENTS, i % 2, i, int((NINE + timedelta(seconds=i)).timestamp() * 1000), None, value, (), f"e{i}"
    )


def served(i: int, query: str) -> ArchivedRecord:
    annotation = {
        "event_id": f"e{i}",
        "query": query,
        "normalized_query": query,
        "tags": [{"role": "product", "start": 0, "end": len(query), "text": query, "canonical": query}],
        "categories": [{"path": ["dairy eggs", "milk"], "score": 0.9}],
        "rewrites": [],
        "source": "cache",
        "model_version": "teach-1",
        "degraded": False,
        "timings": {"total_ms": 0.4},
    }
    ms = int((NINE + timedelta(seconds=i, milliseconds=50)).timestamp() * 1000)
    return ArchivedRecord(QUERY_ANNOTATIONS, 0, i, ms, None, orjson.dumps(annotation), (), f"e{i}")


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    events = [search(i, QUERIES[i % len(QUERIES)]) for i in range(24)]
    bad = ArchivedRecord(
        SEARCH_EVENTS, 0, 99, int((NINE + timedelta(seconds=30)).timestamp() * 1000), None, b"{", (), None
    )
    write_batch(root, [*events, bad])
    write_batch(root, [served(i, QUERIES[i % len(QUERIES)]) for i in range(0, 24, 2)])
    return root


@pytest.fixture
def settings(tmp_path: Path, student_catalog_dir: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", catalog_dir=student_catalog_dir)


def test_a_replay_answers_every_event_resumes_and_repeats_itself(
    archive: Path, settings: Settings, tmp_path: Path
) -> None:
    records = window(archive, None, None)
    spec = parse_spec("student=none")
    first = replay(spec, records, tmp_path / "out", settings, chunk=10, progress=False)
    assert (first.events, first.parts_written, first.parts_resumed) == (25, 3, 0)
    assert first.outcomes == {"annotation": 24, "dead_letter": 1} and first.sources == {"fallback": 24}
    rows = read_rows(first.directory).to_pylist()
    assert rows[-1]["outcome"] == "dead_letter" and rows[-1]["input"] == f"{SEARCH_EVENTS}[0]@99"

    (first.directory / "part-00001.parquet").unlink()  # interrupted after its first and last parts
    again = replay(spec, records, tmp_path / "out", settings, chunk=10, progress=False)
    assert (again.parts_written, again.parts_resumed) == (1, 2)
    repeated = read_rows(again.directory).to_pylist()
    stable = ("event_id", "outcome", "source", "model_version", "degraded", "understanding", "reason")
    assert [{k: r[k] for k in stable} for r in repeated] == [{k: r[k] for k in stable} for r in rows]


def test_two_candidates_compared_event_by_event(archive: Path, settings: Settings, tmp_path: Path) -> None:
    records = window(archive, None, None)
    out = tmp_path / "out"
    fallback = replay(parse_spec("student=none"), records, out, settings, progress=False)
    lexicon = replay(parse_spec("student=lexicon"), records, out, settings, progress=False)
    assert lexicon.sources == {"student": 24}
    result = compare(fallback.directory, lexicon.directory)
    deltas = {d["name"]: d for d in result["deltas"]}
    # Triton down (student=none) degrades every answer and loses the categories: both called, with intervals.
    assert deltas["degraded"]["delta"] == pytest.approx(24 / 25) and deltas["degraded"]["verdict"] == "regression"
    assert deltas["has_category"]["verdict"] == "regression" and deltas["dead_lettered"]["delta"] == 0
    assert result["agreement"]["events"] == 24 and result["agreement"]["top_category"] == 0.0
    assert result["operations"]["candidate"]["dead_letters"] == 1
    # No labels: the degraded side of each disagreement is the one that lost.
    assert {d["verdict"] for d in result["disagreements"]} == {"regression"}


def test_qu_replay_against_what_was_served(archive: Path, settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    env = {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.catalog_dir)}
    args = ["replay", "--from", str(archive), "--candidate", "student=none", "--baseline", "served", "--out", str(out)]
    until = ["--until", "2026-12-06T09:00:12+00:00"]
    result = CliRunner().invoke(app, [*args, "--json", "--no-progress", *until], env=env)
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    assert figures["events"] == 12
    served_replay = figures["replays"][1]
    assert served_replay["outcomes"] == {"annotation": 6, "not_served": 6} and served_replay["sources"] == {"cache": 6}
    assert figures["comparison"]["agreement"]["events"] == 6 and figures["comparison"]["events_compared"] == 6

    # One self-contained page: every chart embedded, nothing fetched from anywhere, the figures beside it.
    html = (out / "report.html").read_text()
    assert all(
        f'id="chart-{name}"' in html for name in ("deltas", "segments", "agreement", "confusion", "sources", "latency")
    )
    assert html.count('src="data:image/png;base64,') == 6 and "http" not in html.replace("http-equiv", "")
    assert "<script" not in html and orjson.loads((out / "report.json").read_bytes()) == figures["comparison"]
    (out / "report.html").unlink()
    rerendered = CliRunner().invoke(app, ["replay", "report", str(out)], env=env)
    assert rerendered.exit_code == 0, rerendered.output
    assert (out / "report.html").read_text().count("data:image/png") == 6


def test_gold_labels_score_both_sides_and_the_report_shows_segments(
    archive: Path, settings: Settings, tmp_path: Path
) -> None:
    gold = tmp_path / "gold.jsonl"
    rows = [
        {
            "query": q,
            "kind": "broad" if " " not in q else "attribute_type",
            "spans": [{"role": "product", "start": 0, "end": len(q), "text": q, "canonical": q}],
        }
        for q in QUERIES
    ]
    gold.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    env = {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.catalog_dir)}
    out = tmp_path / "gold-out"
    args = ["replay", "--from", str(archive), "--candidate", "student=none", "--baseline", "served", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--gold", str(gold), "--format", "qu", "--json", "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    comparison = orjson.loads(result.stdout)["comparison"]
    # The served answers tagged each whole query as its product, as the labels do; the fallback's own tags differ.
    assert comparison["gold"]["baseline"]["events"] == 12 and comparison["gold"]["baseline"]["spans"]["f1"] == 1.0
    assert comparison["gold"]["candidate"]["events"] == 24
    # Rewrite coverage per type on both sides; precision is not measured without a conversion history here.
    served_rewrites = comparison["gold"]["baseline"]["rewrites"]
    assert served_rewrites["queries"] == 12 and served_rewrites["per_type"]["substitute"]["precision"] is None
    exact = next(d for d in comparison["deltas"] if d["name"] == "gold_exact_tags")
    assert exact["baseline"] == 1.0 and exact["candidate"] < 1.0
    # One line per query: where the served answer matched the label and the fallback's did not, a regression.
    differing = comparison["disagreements"]
    assert differing and {d["verdict"] for d in differing} == {"regression"}
    assert len({d["query"] for d in differing}) == len(differing) and all(d["events"] >= 1 for d in differing)
    assert set(comparison["segments"]) == {"head", "torso", "tail"}
    assert sum(s["traffic"]["events"] for s in comparison["segments"].values()) == comparison["agreement"]["events"]
    html = (out / "report.html").read_text()
    assert set(comparison["gold"]["agreement_by_kind"]) == {"broad", "attribute_type"}
    assert comparison["gold"]["agreement_by_kind"]["broad"]["events"] == 4  # "bananas" at 2, 8, 14, 20: served
    assert "Against the gold labels" in html and "Agreement by segment" in html and "attribute_type" in html


CHARTS_LOADED = """JSON.stringify({
  charts: Array.from(document.querySelectorAll('figure[id^="chart-"]')).map(f => {
    const img = f.querySelector('img');
    return [f.id, Boolean(img && img.complete && img.naturalWidth > 100 && img.naturalHeight > 50)];
  }),
  scripts: document.scripts.length,
  title: document.title,
  rows: document.querySelectorAll('table tr').length
})"""


def test_the_report_renders_in_a_real_browser_with_every_chart(
    archive: Path, settings: Settings, tmp_path: Path
) -> None:
    from tests.fixtures.browser import open_page

    env = {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.catalog_dir)}
    out = tmp_path / "browser"
    args = ["replay", "--from", str(archive), "--candidate", "student=none", "--baseline", "served", "--out", str(out)]
    assert CliRunner().invoke(app, [*args, "--no-progress"], env=env).exit_code == 0
    page = open_page((out / "report.html").resolve().as_uri(), CHARTS_LOADED)
    assert page.errors == []
    shown = orjson.loads(page.value)
    assert shown["charts"] == [
        [f"chart-{n}", True] for n in ("deltas", "segments", "agreement", "confusion", "sources", "latency")
    ]
    assert shown["scripts"] == 0 and "student=none" in shown["title"] and shown["rows"] > 10


def test_purchases_after_a_search_score_both_sides_without_labels(
    archive: Path, settings: Settings, tmp_path: Path
) -> None:
    from services.catalog.artifacts import load_catalog

    catalog = load_catalog(settings.resolved_catalog_dir)
    milk = next(p for p in catalog.products if p.category_path == ("dairy eggs", "milk") and p.brand)
    # Shoppers of the served events 0, 6, 12 and 18 ("organic whole milk") bought a branded milk.
    log = tmp_path / "conversions.jsonl"
    rows = [
        {"query": QUERIES[0], "session_id": f"s{i}", "user_id": "u1", "product_id": milk.product_id, "ts": 1764997200}
        for i in (0, 6, 12, 18)
    ]
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    env = {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.catalog_dir)}
    args = ["replay", "--from", str(archive), "--candidate", "student=none", "--baseline", "served"]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "o"), "--conversions", str(log), "--json", "--no-progress"], env=env
    )
    assert result.exit_code == 0, result.output
    comparison = orjson.loads(result.stdout)["comparison"]
    deltas = {d["name"]: d for d in comparison["deltas"]}
    assert comparison["events_with_conversion"] == 4
    # The served answers ranked dairy eggs > milk first; the fallback ranks no category at all.
    top3 = deltas["converted_category_in_top3"]
    assert (top3["events"], top3["baseline"], top3["candidate"]) == (4, 1.0, 0.0)
    assert deltas["converted_brand_tagged"]["events"] == 4


def test_a_topic_with_retention_is_a_replay_source(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], settings: Settings, tmp_path: Path
) -> None:
    topic = kafka_topic(2)
    send_all(
        producer(kafka_broker.bootstrap),
        topic,
        [(None, orjson.dumps({"event_id": f"k{i}", "query": QUERIES[i % len(QUERIES)]}), []) for i in range(15)],
    )
    env = {
        "QU_STATE_DIR": str(settings.state_dir),
        "QU_CATALOG_DIR": str(settings.catalog_dir),
        "QU_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
    }
    out = tmp_path / "from-topic"
    args = ["replay", "--from", f"kafka:{topic}", "--candidate", "student=none", "--out", str(out), "--json"]
    result = CliRunner().invoke(app, [*args, "--no-progress"], env=env)
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    assert figures["events"] == 15 and figures["replays"][0]["sources"] == {"fallback": 15}
    assert list((out / "source-archive").rglob("*.parquet"))  # the copy the replay read


def test_the_student_triton_serves_and_the_teacher_are_candidates_too(
    archive: Path, settings: Settings, triton_server: TritonServer, tmp_path: Path
) -> None:
    records = window(archive, None, None)
    served_by_triton = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url})
    lexicon = replay(parse_spec("student=lexicon"), records, tmp_path / "o", settings, progress=False)
    triton = replay(parse_spec("student=triton:1"), records, tmp_path / "o", served_by_triton, progress=False)
    assert triton.sources == {"student": 24} and triton.outcomes["dead_letter"] == 1
    # qu_student version 1 is the lexicon student served: the same tags, and the categories of the same MiniLM.
    agreement = compare(triton.directory, lexicon.directory)["agreement"]
    assert agreement["tags"] == 1.0 and agreement["top_category"] >= 0.9
    teacher = replay(parse_spec("student=teacher"), records, tmp_path / "o", settings, progress=False)
    assert teacher.sources == {"student": 24}
    assert {r["model_version"] for r in read_rows(teacher.directory).to_pylist() if r["source"]} != {
        r["model_version"] for r in read_rows(lexicon.directory).to_pylist() if r["source"]
    }


def test_segments_split_the_traffic_by_query_frequency() -> None:
    from services.replay.compare import segments

    queries = ["milk"] * 6 + ["eggs"] * 3 + ["kale", "figs"] + [None]
    assert segments(queries) == ["head"] * 6 + ["torso"] * 3 + ["tail", "tail", "none"]


def test_a_window_without_events_is_a_clear_error(archive: Path, settings: Settings, tmp_path: Path) -> None:
    env = {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.catalog_dir)}
    args = ["replay", "--from", str(archive), "--candidate", "student=none", "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(app, [*args, "--since", "2027-01-01T00:00Z"], env=env)
    assert result.exit_code != 0 and "no search events" in result.output
    result = CliRunner().invoke(app, [*args, "--since", "2027-01-01T00:00"], env=env)
    assert result.exit_code != 0 and "no time zone" in result.output
