"""Conversion history: reading and validating logs, the decayed top-K aggregation, the store."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.catalog.model import Product
from services.conversions import (
    BrandCount,
    CategoryCount,
    ConversionHistory,
    ConversionsNotFoundError,
    build_conversions,
    roll_up,
)
from services.conversions.history import aggregate_conversions
from services.conversions.reader import ConversionLogReader, SkippedRecord
from services.conversions.store import MANIFEST_FILE, ConversionsManifest
from services.errors import InputError
from services.settings import Settings

DAY = 86_400
T0 = 1_714_521_600  # 2024-05-01T00:00:00Z, the newest conversion in every log below
T0_DT = datetime(2024, 5, 1, tzinfo=UTC)
ICE_CREAM = ("frozen", "ice cream")
COOKIES = ("bakery", "cookies")

PRODUCTS = [
    Product("p1", "Ben & Jerry's Half Baked", "Ben & Jerry's", ICE_CREAM),
    Product("p2", "Ben & Jerry's Cherry Garcia", "Ben & Jerry's", ICE_CREAM),
    Product("p3", "Halo Top Vanilla", "Halo Top", ICE_CREAM),
    Product("p4", "Chocolate Chip Cookies", "", COOKIES),
    Product("p5", "Organic Whole Milk", "Horizon Organic", ("dairy eggs", "milk")),
    Product("p6", "Oat Milk", "Oatly", ("dairy eggs", "milk alternatives")),
    Product("p7", "Frozen Yogurt Bars", "Yasso", ("frozen", "novelties")),
    Product("42", "Numbered Product", "Acme", COOKIES),
]
CATALOG = {p.product_id: p for p in PRODUCTS}


def rec(query: Any, product_id: Any, ts: Any, **extra: Any) -> dict[str, Any]:
    return {"query": query, "session_id": "s1", "user_id": "u1", "product_id": product_id, "ts": ts, **extra}


# "ice cream": three ice-cream conversions and one unbranded cookie, with every ts format.
ICE_CREAM_LOG = [
    rec("ice cream", "p1", "2024-05-01T02:00:00+02:00"),  # = T0, ISO with an offset
    rec("Ice Cream", "p2", T0 - 30 * DAY),  # epoch seconds
    rec("ice  cream!", "p3", (T0 - 30 * DAY) * 1000),  # epoch milliseconds
    rec("ice cream", "p4", "2024-03-02T00:00:00Z"),  # T0 - 60 days
]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else orjson.dumps(r).decode() for r in records]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def write_parquet(path: Path, records: list[dict[str, Any]], ts_type: Any = None) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    columns = {name: [r[name] for r in records] for name in ("query", "session_id", "user_id", "product_id")}
    table = pa.table({**columns, "ts": pa.array([r["ts"] for r in records], type=ts_type)})
    pq.write_table(table, path)
    return path


def read_all(path: Path, *, skip_invalid: bool = False) -> tuple[dict[str, Any], ConversionLogReader]:
    reader = ConversionLogReader(path, CATALOG, skip_invalid=skip_invalid)
    result = aggregate_conversions(reader, CATALOG, top_k=10, half_life_days=30)
    return result, reader


# --- aggregation -------------------------------------------------------------------------


def test_exact_counts_scores_and_recency_from_jsonl(tmp_path: Path) -> None:
    result, reader = read_all(write_jsonl(tmp_path / "log.jsonl", ICE_CREAM_LOG))
    assert (reader.stats.records_read, reader.stats.kept, reader.stats.skipped) == (4, 4, [])
    assert list(result) == ["ice cream"]  # three spellings, one key
    q = result["ice cream"]
    assert (q.conversions, q.last_ts) == (4, T0_DT)
    # Weights: 1 at T0, 0.5 thirty days back, 0.25 sixty days back (half-life 30 days).
    assert q.categories == (
        CategoryCount(ICE_CREAM, 3, T0_DT, 2.0),
        CategoryCount(COOKIES, 1, datetime(2024, 3, 2, tzinfo=UTC), 0.25),
    )
    # The unbranded cookie counts in `conversions` but is not a brand.
    assert q.brands == (
        BrandCount("Ben & Jerry's", 2, T0_DT, 1.5),
        BrandCount("Halo Top", 1, datetime(2024, 4, 1, tzinfo=UTC), 0.5),
    )


def test_top_k_cuts_lists_but_not_the_total(tmp_path: Path) -> None:
    log = write_jsonl(tmp_path / "log.jsonl", ICE_CREAM_LOG)
    q = aggregate_conversions(ConversionLogReader(log, CATALOG), CATALOG, top_k=1, half_life_days=30)["ice cream"]
    assert q.conversions == 4
    assert [c.path for c in q.categories] == [ICE_CREAM]
    assert [b.brand for b in q.brands] == ["Ben & Jerry's"]


@pytest.mark.parametrize(
    ("half_life_days", "expected_order"),
    [
        (30, [("dairy eggs", "milk alternatives"), ("dairy eggs", "milk")]),  # 1.0 beats 3 x 0.125
        (1000, [("dairy eggs", "milk"), ("dairy eggs", "milk alternatives")]),  # 3 x ~0.94 beats 1.0
    ],
)
def test_recent_conversion_outranks_older_more_frequent_one(
    tmp_path: Path, half_life_days: float, expected_order: list[tuple[str, ...]]
) -> None:
    log = write_jsonl(
        tmp_path / "log.jsonl",
        [rec("milk", "p5", T0 - 90 * DAY)] * 3 + [rec("milk", "p6", T0)],
    )
    q = aggregate_conversions(ConversionLogReader(log, CATALOG), CATALOG, top_k=10, half_life_days=half_life_days)
    assert [c.path for c in q["milk"].categories] == expected_order
    assert [c.count for c in q["milk"].categories] == ([1, 3] if half_life_days == 30 else [3, 1])
    if half_life_days == 30:
        assert q["milk"].categories[1].score == 0.375


def test_ties_broken_by_count_then_name(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "log.jsonl",
        [
            rec("snacks", "p3", T0),  # Halo Top: 1 x 1.0
            rec("snacks", "p7", T0),  # Yasso: 1 x 1.0
            rec("snacks", "p1", T0 - 30 * DAY),  # Ben & Jerry's: 2 x 0.5 = 1.0, more conversions
            rec("snacks", "p2", T0 - 30 * DAY),
        ],
    )
    q = aggregate_conversions(ConversionLogReader(log, CATALOG), CATALOG, top_k=10, half_life_days=30)["snacks"]
    assert [(b.brand, b.count, b.score) for b in q.brands] == [
        ("Ben & Jerry's", 2, 1.0),
        ("Halo Top", 1, 1.0),
        ("Yasso", 1, 1.0),
    ]
    # Categories: ice cream 3 conversions (score 2.0) before novelties (1.0).
    assert [(c.path, c.count, c.score) for c in q.categories] == [
        (ICE_CREAM, 3, 2.0),
        (("frozen", "novelties"), 1, 1.0),
    ]


def test_scores_do_not_depend_on_record_order(tmp_path: Path) -> None:
    records = [rec("pint", "p1", T0 - d * 3_600) for d in range(0, 500, 7)] + [rec("pint", "p3", T0 - 11)]
    forward = write_jsonl(tmp_path / "a.jsonl", records)
    backward = write_jsonl(tmp_path / "b.jsonl", records[::-1])
    a = aggregate_conversions(ConversionLogReader(forward, CATALOG), CATALOG, top_k=5, half_life_days=3)
    b = aggregate_conversions(ConversionLogReader(backward, CATALOG), CATALOG, top_k=5, half_life_days=3)
    assert a == b


def test_query_normalization_makes_one_key(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "log.jsonl",
        [
            rec("Ben & Jerry's", "p1", T0),
            rec("ben and jerrys", "p2", T0),
            rec("BEN & JERRY\u2019S", "p1", T0),
        ],
    )
    out = tmp_path / "out"
    report = build_conversions(log, PRODUCTS, out, top_k=10, half_life_days=30, skip_invalid=False)
    assert report.queries == 1
    history = ConversionHistory.load(out)
    assert list(history.queries()) == ["ben and jerrys"]
    for spelling in ("Ben & Jerry's", "ben and jerrys", "  BEN&JERRYS "):
        found = history.get(spelling)
        assert found is not None and found.query == "ben and jerrys" and found.conversions == 3
        assert spelling in history
    assert history.get_normalized("ben and jerrys") == history.get("Ben & Jerry's")
    assert history.get_normalized("Ben & Jerry's") is None  # not a normalized key
    assert history.get("halo top") is None
    assert history.get("") is None and history.get("!!!") is None


def test_roll_up_adds_descendants_into_ancestors() -> None:
    t1 = datetime(2024, 4, 1, tzinfo=UTC)
    rolled = roll_up(
        [
            CategoryCount(ICE_CREAM, 3, t1, 2.0),
            CategoryCount(COOKIES, 4, t1, 1.5),
            CategoryCount(("frozen", "novelties"), 1, T0_DT, 1.0),
        ]
    )
    assert rolled == [
        CategoryCount(("frozen",), 4, T0_DT, 3.0),
        CategoryCount(ICE_CREAM, 3, t1, 2.0),
        CategoryCount(("bakery",), 4, t1, 1.5),
        CategoryCount(COOKIES, 4, t1, 1.5),
        CategoryCount(("frozen", "novelties"), 1, T0_DT, 1.0),
    ]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        aggregate_conversions([], CATALOG, top_k=0, half_life_days=30)
    with pytest.raises(ValueError, match="half_life_days"):
        aggregate_conversions([], CATALOG, top_k=10, half_life_days=0)


# --- formats -------------------------------------------------------------------------------


def test_parquet_and_gzip_give_the_same_history_as_jsonl(tmp_path: Path) -> None:
    # Parquet columns hold one type each: ts as ISO text here, as epoch numbers in the next test.
    iso_log = [
        rec(r["query"], r["product_id"], datetime.fromtimestamp(_seconds(r["ts"]), tz=UTC).isoformat())
        for r in ICE_CREAM_LOG
    ]
    expected, _ = read_all(write_jsonl(tmp_path / "log.jsonl", ICE_CREAM_LOG))
    from_gzip, _ = read_all(write_jsonl(tmp_path / "log.jsonl.gz", ICE_CREAM_LOG))
    from_parquet, reader = read_all(write_parquet(tmp_path / "log.parquet", iso_log))
    assert from_gzip == expected
    assert from_parquet == expected
    assert (reader.stats.records_read, reader.stats.kept) == (4, 4)


def _seconds(ts: Any) -> float:
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return ts / 1000 if ts >= 1e11 else float(ts)


def test_parquet_numeric_and_timestamp_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    expected, _ = read_all(write_jsonl(tmp_path / "log.jsonl", ICE_CREAM_LOG))
    ms_log = [rec(r["query"], r["product_id"], int(_seconds(r["ts"]) * 1000)) for r in ICE_CREAM_LOG]
    from_ms, _ = read_all(write_parquet(tmp_path / "ms.parquet", ms_log, pa.int64()))
    ns = pa.timestamp("ns", tz="UTC")
    ns_log = [rec(r["query"], r["product_id"], int(_seconds(r["ts"]) * 1e9)) for r in ICE_CREAM_LOG]
    from_ns, _ = read_all(write_parquet(tmp_path / "ns.parquet", ns_log, ns))
    assert from_ms == expected
    assert from_ns == expected


def test_parquet_file_level_problems(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    naive = write_parquet(tmp_path / "naive.parquet", [rec("milk", "p5", T0 * 10**6)], pa.timestamp("us"))
    with pytest.raises(InputError, match="without a timezone") as err:
        list(ConversionLogReader(naive, CATALOG))
    assert err.value.column == "ts"
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"query": ["milk"], "product_id": ["p5"]}), tmp_path / "cols.parquet")
    with pytest.raises(InputError, match=r"missing column.*session_id, user_id, ts"):
        list(ConversionLogReader(tmp_path / "cols.parquet", CATALOG))
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        list(ConversionLogReader(tmp_path / "junk.parquet", CATALOG))


def test_parquet_bad_record_names_its_row(tmp_path: Path) -> None:
    log = write_parquet(tmp_path / "log.parquet", [rec("milk", "p5", T0), rec("milk", "nope", T0)])
    with pytest.raises(InputError) as err:
        list(ConversionLogReader(log, CATALOG))
    assert (err.value.source, err.value.row, err.value.column) == (str(log), 2, "product_id")


def test_parquet_nulls_are_missing_values_and_integer_ids_stay_integers(tmp_path: Path) -> None:
    log = write_parquet(
        tmp_path / "log.parquet",
        [rec("cookies", 42, T0), rec("cookies", None, T0), rec("cookies", 42, T0, session_id=None)],
    )
    result, reader = read_all(log, skip_invalid=True)
    assert reader.stats.skipped == [
        SkippedRecord(2, "product_id", "missing product_id"),
        SkippedRecord(3, "session_id", "missing session_id"),
    ]
    assert result["cookies"].conversions == 1


def test_numeric_ids_and_extra_fields_are_accepted(tmp_path: Path) -> None:
    log = write_jsonl(tmp_path / "log.jsonl", [rec("cookies", 42, T0, session_id=7, user_id=8, page="search")])
    result, _ = read_all(log)
    assert [b.brand for b in result["cookies"].brands] == ["Acme"]


# --- bad records ---------------------------------------------------------------------------

BAD_RECORDS: list[tuple[str, Any, str, str]] = [
    ("invalid json", '{"query": "milk", ', "", "invalid JSON"),
    ("not an object", "[1, 2]", "", "expected a JSON object"),
    (
        "missing query",
        {k: v for k, v in rec("x", "p5", T0).items() if k != "query"},
        "query",
        "missing query",
    ),
    ("query not text", rec(12, "p5", T0), "query", "expected text"),
    ("empty query", rec("", "p5", T0), "query", "empty query"),
    ("query of punctuation", rec("?!", "p5", T0), "query", "empty query"),
    ("missing session", rec("milk", "p5", T0, session_id=None), "session_id", "missing session_id"),
    ("blank user", rec("milk", "p5", T0, user_id="   "), "user_id", "empty user_id"),
    ("float product", rec("milk", 1.5, T0), "product_id", "expected text or an integer"),
    ("unknown product", rec("milk", "p999", T0), "product_id", "unknown product_id: 'p999'"),
    ("missing ts", rec("milk", "p5", None), "ts", "missing ts"),
    ("unreadable ts", rec("milk", "p5", "yesterday"), "ts", "unreadable timestamp"),
    ("ts without zone", rec("milk", "p5", "2024-05-01T00:00:00"), "ts", "without a timezone"),
    ("ts zero", rec("milk", "p5", 0), "ts", "out of range"),
    ("ts in microseconds", rec("milk", "p5", T0 * 10**6), "ts", "out of range"),
    ("ts boolean", rec("milk", "p5", True), "ts", "expected text or a number"),
]


@pytest.mark.parametrize(("kind", "bad", "field", "reason"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_stops_the_read(tmp_path: Path, kind: str, bad: Any, field: str, reason: str) -> None:
    # Line 1 good, line 2 blank (counted, holds no record), line 3 bad, line 4 good.
    log = write_jsonl(tmp_path / "log.jsonl", [rec("milk", "p5", T0), "", bad, rec("milk", "p6", T0)])
    with pytest.raises(InputError) as err:
        read_all(log)
    assert (err.value.source, err.value.row, err.value.column) == (str(log), 3, field or None)
    assert reason in err.value.reason
    assert f"{log}, row 3" in str(err.value)


@pytest.mark.parametrize(("kind", "bad", "field", "reason"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_bad_record_is_skipped_and_reported(tmp_path: Path, kind: str, bad: Any, field: str, reason: str) -> None:
    log = write_jsonl(tmp_path / "log.jsonl", [rec("milk", "p5", T0), "", bad, rec("milk", "p6", T0)])
    result, reader = read_all(log, skip_invalid=True)
    assert (reader.stats.records_read, reader.stats.kept) == (3, 2)
    [skipped] = reader.stats.skipped
    assert (skipped.row, skipped.field) == (3, field)
    assert reason in skipped.reason
    assert result["milk"].conversions == 2


def test_build_report_lists_every_skipped_record(tmp_path: Path) -> None:
    log = write_jsonl(
        tmp_path / "log.jsonl",
        [
            rec("milk", "p5", T0),
            rec("milk", "p998", T0),
            "oops",
            rec("milk", "p999", T0),
            rec("milk", "p5", "x"),
        ],
    )
    report = build_conversions(log, PRODUCTS, tmp_path / "out", top_k=3, half_life_days=7, skip_invalid=True)
    assert (report.records_read, report.records_kept, report.records_skipped, report.queries) == (5, 1, 4, 1)
    assert [(s.row, s.field) for s in report.skipped] == [
        (2, "product_id"),
        (3, ""),
        (4, "product_id"),
        (5, "ts"),
    ]
    assert report.skipped_by_reason == {
        "product_id: unknown product_id": 2,
        "record: invalid JSON": 1,
        "ts: unreadable timestamp": 1,
    }
    assert report.reference_ts == T0_DT
    assert report.manifest_path == tmp_path / "out" / MANIFEST_FILE
    manifest = orjson.loads(report.manifest_path.read_bytes())
    assert manifest["schema_version"] == 1
    assert manifest["source"] == str(log)
    assert (manifest["top_k"], manifest["half_life_days"], manifest["queries"]) == (3, 7.0, 1)
    assert (manifest["records_read"], manifest["records_kept"], manifest["records_skipped"]) == (5, 1, 4)
    assert manifest["reference_ts"] == "2024-05-01T00:00:00Z"


def test_build_with_nothing_valid_writes_nothing(tmp_path: Path) -> None:
    log = write_jsonl(tmp_path / "log.jsonl", [rec("milk", "p999", T0), "{"])
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"no valid record among 2 \(product_id: unknown product_id x1"):
        build_conversions(log, PRODUCTS, out, top_k=10, half_life_days=30, skip_invalid=True)
    assert not out.exists()


def test_file_level_problems(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    with pytest.raises(InputError, match="no records"):
        read_all(empty)
    with pytest.raises(InputError, match="no such file"):
        read_all(tmp_path / "missing.jsonl")
    (tmp_path / "log.csv").write_text("query\n")
    with pytest.raises(InputError, match="unknown log format"):
        read_all(tmp_path / "log.csv")
    truncated = tmp_path / "log.jsonl.gz"
    truncated.write_bytes(gzip.compress(b"\n".join([orjson.dumps(rec("milk", "p5", T0))] * 1000))[:-30])
    with pytest.raises(InputError, match="unreadable file"):
        read_all(truncated)


# --- store ---------------------------------------------------------------------------------


def _build(tmp_path: Path, records: list[Any], out: Path) -> ConversionHistory:
    log = write_jsonl(tmp_path / "log.jsonl", records)
    build_conversions(log, PRODUCTS, out, top_k=10, half_life_days=30, skip_invalid=False)
    return ConversionHistory.load(out)


def test_round_trip_save_load(tmp_path: Path) -> None:
    log = write_jsonl(tmp_path / "log.jsonl", [*ICE_CREAM_LOG, rec("milk", "p5", T0 - 5), rec("oat milk", "p6", T0)])
    expected, _ = read_all(log)
    build_conversions(log, PRODUCTS, tmp_path / "a", top_k=10, half_life_days=30, skip_invalid=False)
    history = ConversionHistory.load(tmp_path / "a")
    assert len(history) == 3
    assert list(history.queries()) == ["ice cream", "milk", "oat milk"]
    assert {key: history.get(key) for key in history.queries()} == expected
    # Saved again, the same history gives the same bytes: the format is stable.
    history.save(tmp_path / "b")
    data_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert data_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in data_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert ConversionHistory.load(tmp_path / "b").manifest == history.manifest


def test_a_new_build_replaces_the_old_data_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _build(tmp_path, [rec("milk", "p5", T0)], out)
    history = _build(tmp_path, [rec("oat milk", "p6", T0)], out)
    assert list(history.queries()) == ["oat milk"]
    assert len([p for p in out.iterdir() if p.name.startswith("queries-")]) == 1


@pytest.mark.parametrize("failing", ["fsync", "second replace"])
def test_failed_save_leaves_the_previous_history_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    out = tmp_path / "out"
    old = _build(tmp_path, [rec("milk", "p5", T0)], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    new = ConversionHistory.from_queries(
        aggregate_conversions([], CATALOG, top_k=10, half_life_days=30),
        ConversionsManifest("other.jsonl", "2024-05-02T00:00:00Z", None, 10, 30.0, 0, 0, 0),
    )
    real_replace = os.replace
    calls: list[str] = []

    def fail_fsync(fd: int) -> None:
        raise OSError("disk full")

    def fail_second_replace(src: Any, dst: Any) -> None:
        calls.append(str(dst))
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(src, dst)

    if failing == "fsync":
        monkeypatch.setattr(os, "fsync", fail_fsync)
    else:
        monkeypatch.setattr(os, "replace", fail_second_replace)
    with pytest.raises(OSError, match="disk full"):
        new.save(out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    reloaded = ConversionHistory.load(out)
    assert list(reloaded.queries()) == list(old.queries()) == ["milk"]


def test_load_refuses_missing_foreign_or_corrupt_history(tmp_path: Path) -> None:
    with pytest.raises(ConversionsNotFoundError, match="qu conversions build"):
        ConversionHistory.load(tmp_path / "nothing")
    out = tmp_path / "out"
    _build(tmp_path, [rec("milk", "p5", T0)], out)
    [data_file] = [p for p in out.iterdir() if p.name.startswith("queries-")]
    data_file.write_bytes(data_file.read_bytes().replace(b'"milk"', b'"mild"'))
    with pytest.raises(InputError, match="checksum"):
        ConversionHistory.load(out)
    manifest = orjson.loads((out / MANIFEST_FILE).read_bytes())
    (out / MANIFEST_FILE).write_bytes(orjson.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(ConversionsNotFoundError, match="schema version 99"):
        ConversionHistory.load(out)


def test_settings_defaults_feed_the_build(tmp_path: Path) -> None:
    settings = Settings()
    log = write_jsonl(tmp_path / "log.jsonl", ICE_CREAM_LOG)
    report = build_conversions(
        log,
        PRODUCTS,
        tmp_path / "out",
        top_k=settings.conversions_top_k,
        half_life_days=settings.conversions_half_life_days,
        skip_invalid=False,
    )
    history = ConversionHistory.load(report.output_dir)
    assert (history.manifest.top_k, history.manifest.half_life_days) == (10, 30.0)
    assert history.get("ice cream") == read_all(log)[0]["ice cream"]
