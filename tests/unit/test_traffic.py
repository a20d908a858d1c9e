"""The traffic generator: shape, determinism, labels that match the queries, sessions and conversions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.catalog.artifacts import Catalog, build_catalog, write_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.cli.main import app
from services.conversions import build_conversions
from services.normalize import normalize_query
from services.traffic import TrafficConfig, generate_traffic, traffic_shape
from services.traffic.model import QueryKind, Role
from services.traffic.output import companion_paths, write_traffic
from services.traffic.queries import QueryUniverse


@pytest.fixture(scope="module")
def demo_catalog() -> Catalog:
    """The shipped demo catalog, built without embeddings (the generator does not read them)."""
    return build_catalog(read_catalog(demo_files()[0]).products, embedder=None)


@pytest.fixture(scope="module")
def universe(demo_catalog: Catalog) -> QueryUniverse:
    return QueryUniverse(demo_catalog)


@pytest.fixture(scope="module")
def traffic_10k(demo_catalog: Catalog, universe: QueryUniverse):  # type: ignore[no-untyped-def]
    return generate_traffic(demo_catalog, TrafficConfig(events=10_000, seed=7), universe)


def test_same_seed_same_traffic_other_seed_other_traffic(demo_catalog: Catalog, universe: QueryUniverse) -> None:
    first = generate_traffic(demo_catalog, TrafficConfig(events=2_000, seed=3), universe)
    again = generate_traffic(demo_catalog, TrafficConfig(events=2_000, seed=3), universe)
    other = generate_traffic(demo_catalog, TrafficConfig(events=2_000, seed=4), universe)
    assert [e.to_json() for e in first.events] == [e.to_json() for e in again.events]
    assert [c.to_json() for c in first.conversions] == [c.to_json() for c in again.conversions]
    assert [q.label() for q in first.labels.values()] == [q.label() for q in again.labels.values()]
    assert [e.query for e in first.events] != [e.query for e in other.events]


def test_exactly_the_requested_number_of_events_in_time_order(traffic_10k) -> None:  # type: ignore[no-untyped-def]
    events = traffic_10k.events
    assert len(events) == 10_000
    assert len({e.event_id for e in events}) == 10_000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    for e in events[:100]:
        assert e.query and e.user_id and e.session_id and e.ts.endswith("Z")


def test_every_query_is_labelled_and_every_span_points_at_its_text(traffic_10k, demo_catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    for event in traffic_10k.events:
        assert event.query in traffic_10k.labels
    for query in traffic_10k.labels.values():
        previous_end = 0
        for span in query.spans:
            assert query.text[span.start : span.end] == span.text
            assert span.start >= previous_end, f"overlapping spans in {query.text!r}"
            previous_end = span.end
            if span.role is Role.BRAND:
                assert demo_catalog.brands.lookup(span.canonical) is not None, span
        if query.category is not None:
            assert query.category in demo_catalog.taxonomy


def test_product_and_attribute_canonicals_come_from_the_catalog(traffic_10k, demo_catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    known_types = set(demo_catalog.types.entries) | {node.name for node in demo_catalog.taxonomy}
    unknown_products = Counter()
    for query in traffic_10k.labels.values():
        for span in query.spans:
            if span.role is Role.PRODUCT and span.canonical not in known_types:
                unknown_products[span.canonical] += 1
            if span.role is Role.ATTRIBUTE:
                assert demo_catalog.attributes.canonical_of(span.canonical) is not None, span
    # Only the open broad intents ("healthy food", "dinner") name things no catalog lists.
    assert set(unknown_products) <= {"food", "dinner", "groceries", "snacks", "ideas"}


def test_shopper_phrasings_are_all_there(traffic_10k) -> None:  # type: ignore[no-untyped-def]
    kinds = Counter(traffic_10k.labels[e.query].kind for e in traffic_10k.events)
    for kind in QueryKind:
        assert kinds[kind] > 0, f"no {kind.value} queries in 10,000 events"
    negations = [q for q in traffic_10k.labels.values() if q.kind is QueryKind.NEGATION]
    assert any("no gluten" in q.text.lower() or "without gluten" in q.text.lower() for q in negations)
    assert all(any(s.role is Role.ATTRIBUTE for s in q.spans) for q in negations)
    misspelled = [q for q in traffic_10k.labels.values() if q.kind is QueryKind.MISSPELLING]
    assert any(normalize_query(s.text) != normalize_query(s.canonical) for q in misspelled for s in q.spans)


def test_sessions_have_follow_ups_and_conversions_follow_their_search(traffic_10k, demo_catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    per_session = Counter(e.session_id for e in traffic_10k.events)
    assert sum(1 for n in per_session.values() if n > 1) > len(per_session) * 0.2
    by_event = {e.event_id: e for e in traffic_10k.events}
    product_ids = {p.product_id for p in demo_catalog.products}
    for conversion in traffic_10k.conversions:
        search = by_event[conversion.event_id]
        assert conversion.query == search.query and conversion.session_id == search.session_id
        assert conversion.ts > search.ts
        assert conversion.product_id in product_ids
    assert 0.3 < len(traffic_10k.conversions) / len(traffic_10k.events) < 0.7


def test_some_conversions_are_noise(traffic_10k, demo_catalog: Catalog) -> None:  # type: ignore[no-untyped-def]
    """Searching "bread" and buying bananas: some conversions land outside the meant category."""
    path_of = {p.product_id: p.category_path for p in demo_catalog.products}
    outside = [
        c
        for c in traffic_10k.conversions
        if (meant := traffic_10k.labels[c.query].category) is not None and path_of[c.product_id][: len(meant)] != meant
    ]
    share = len(outside) / len(traffic_10k.conversions)
    assert 0.03 < share < 0.4, share


@pytest.mark.slow
def test_the_shape_of_100k_events_seed_1_through_the_cli(tmp_path: Path, demo_catalog: Catalog) -> None:
    """The issue's figure: top-1,000 share above 50%, at least 20% of distinct queries seen once."""
    write_catalog(demo_catalog, tmp_path / "catalog")
    out = tmp_path / "traffic" / "events.jsonl"
    result = CliRunner().invoke(
        app,
        ["--state-dir", str(tmp_path), "traffic", "--events", "100000", "--seed", "1", "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["events"] == 100_000
    assert summary["top_1000_share"] > 0.5
    assert summary["singleton_share"] >= 0.2
    # The summary is what the file holds.
    lines = out.read_bytes().splitlines()
    assert len(lines) == 100_000
    shape = traffic_shape(orjson.loads(line)["query"] for line in lines)
    assert shape.top_1000_share == pytest.approx(summary["top_1000_share"])
    files = companion_paths(out)
    assert files.labels.is_file() and files.conversions.is_file()


def test_written_conversions_build_a_history(tmp_path: Path, demo_catalog: Catalog, traffic_10k) -> None:  # type: ignore[no-untyped-def]
    files = companion_paths(tmp_path / "events.jsonl")
    write_traffic(traffic_10k, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.conversions.jsonl",
        "events.jsonl",
        "events.labels.jsonl",
    ]
    report = build_conversions(
        files.conversions,
        demo_catalog.products,
        tmp_path / "history",
        top_k=5,
        half_life_days=30,
        skip_invalid=False,
    )
    assert report.records_read == report.records_kept == len(traffic_10k.conversions)
    labels = [orjson.loads(line) for line in files.labels.read_bytes().splitlines()]
    assert len(labels) == len(traffic_10k.labels)
    assert {"query", "kind", "spans", "category"} <= set(labels[0])


def test_head_ranks_popular_things_first(universe: QueryUniverse) -> None:
    head = [normalize_query(q.text) for q in universe.head[:50]]
    assert "banana" in head or "bananas" in head  # the best seller in the Instacart order lines
    assert len(set(head)) == len(head)


def test_a_config_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="tail_rate"):
        TrafficConfig(events=10, tail_rate=1.5)
    with pytest.raises(ValueError, match="events"):
        TrafficConfig(events=-1)
