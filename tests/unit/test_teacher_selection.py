"""Which queries the teacher teaches: the head of a log, promoted cache misses, an explicit list."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.errors import InputError
from services.teacher.selection import Origin, QueryLog, count_misses, promoted, read_query_list


def write_log(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def event(query: str, session: str, ts: str) -> dict[str, Any]:
    return {"event_id": f"{session}-{ts}", "query": query, "session_id": session, "ts": ts}


def test_the_head_is_the_most_frequent_normalized_queries_ties_alphabetical(tmp_path: Path) -> None:
    rows = [event(q, f"s{i}", f"2026-01-01T00:00:{i:02d}Z") for i, q in enumerate(
        ["Milk", "milk", "MILK ", "bread", "Bread", "eggs", "eggs", "apples", "  "]
    )]  # fmt: skip
    log = QueryLog.read([write_log(tmp_path / "a.jsonl", rows)])
    assert log.events == 8  # the blank query teaches nothing and is not counted
    head = log.head(3)
    assert [(s.query, s.count, s.origin) for s in head] == [
        ("milk", 3, Origin.HEAD),
        ("bread", 2, Origin.HEAD),
        ("eggs", 2, Origin.HEAD),
    ]


def test_followups_are_the_later_searches_of_the_same_sessions_most_frequent_first(tmp_path: Path) -> None:
    rows = [
        event("milk", "a", "2026-01-01T00:00:01Z"),
        event("oat milk", "a", "2026-01-01T00:00:05Z"),
        event("almond milk", "a", "2026-01-01T00:00:09Z"),
        event("milk", "b", "2026-01-01T00:00:02Z"),
        event("oat milk", "b", "2026-01-01T00:00:03Z"),
        event("bread", "b", "2026-01-01T00:00:01Z"),  # before milk in its session: not a follow-up of milk
        event("milk", "b", "2026-01-01T00:00:04Z"),  # the query again is not its own follow-up
    ]
    log = QueryLog.read([write_log(tmp_path / "log.jsonl", rows)])
    assert log.followups_of("milk") == ("oat milk", "almond milk")
    assert log.followups_of("bread") == ("milk", "oat milk")
    assert log.followups_of("almond milk") == ()


def test_misses_promote_the_tail_that_keeps_arriving(tmp_path: Path) -> None:
    records = [(orjson.dumps({"normalized_query": q}), [], f"qu.cache-misses.v1[0]@{i}") for i, q in enumerate(
        ["rare cheese", "rare cheese", "rare cheese", "once only", "milk", "milk", "milk"]
    )]  # fmt: skip
    counts = count_misses(records)
    assert counts == Counter({"rare cheese": 3, "milk": 3, "once only": 1})
    chosen = promoted(counts, 2, exclude={"milk"}, log=None)
    assert [(s.query, s.origin, s.count) for s in chosen] == [("rare cheese", Origin.PROMOTED, 3)]


@pytest.mark.parametrize(
    ("value", "problem"),
    [(b"not json", "not JSON"), (b'{"query": "x"}', "no normalized_query"), (b"[1, 2]", "a JSON list")],
)
def test_a_bad_miss_record_names_where_it_is(value: bytes, problem: str) -> None:
    with pytest.raises(InputError, match=problem) as caught:
        count_misses([(value, [], "qu.cache-misses.v1[2]@17")])
    assert caught.value.source == "qu.cache-misses.v1[2]@17"


def test_an_explicit_list_takes_lines_or_json_lines_once_each(tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_text('Bread, No Gluten\n\n{"query": "x large zip lock"}\nbread no gluten\n', encoding="utf-8")
    chosen = read_query_list(path)
    assert [(s.query, s.origin) for s in chosen] == [
        ("bread no gluten", Origin.EXPLICIT),
        ("x large zip lock", Origin.EXPLICIT),
    ]


@pytest.mark.parametrize(
    ("content", "row", "message"),
    [
        (b"milk\n{not json\n", 2, "not JSON"),
        (b'milk\n{"q": "eggs"}\n', 2, "missing or not a string"),
        (b"milk\n!!!\n", 2, "has no words"),
        (b"\xff\xfe", None, "not UTF-8"),
    ],
)
def test_a_bad_query_list_names_the_line(tmp_path: Path, content: bytes, row: int | None, message: str) -> None:
    path = tmp_path / "queries.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_query_list(path)
    assert caught.value.source == str(path) and caught.value.row == row


def test_a_bad_log_names_the_file_and_line(tmp_path: Path) -> None:
    path = write_log(tmp_path / "log.jsonl", [event("milk", "a", "t")])
    with path.open("ab") as handle:
        handle.write(b'{"session_id": "a"}\n')
    with pytest.raises(InputError, match="missing or not a string") as caught:
        QueryLog.read([path])
    assert (caught.value.row, caught.value.column) == (2, "query")
    with pytest.raises(InputError, match="cannot read the query log"):
        QueryLog.read([tmp_path / "missing.jsonl"])
