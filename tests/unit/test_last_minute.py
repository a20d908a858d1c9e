"""The last minute's counts that `qu status` shows, and the lines it prints from them."""

from __future__ import annotations

import pytest

from services.annotation.last_minute import LastMinute
from services.stack.figures import OperatorFigures, summary_lines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counts_leave_the_window_a_minute_after_they_came() -> None:
    clock = Clock()
    window = LastMinute(60, clock)
    window.add("events", 10)
    clock.now += 30.5
    window.add("events", 5)
    window.add("dead_letters")
    assert window.totals() == {"events": 15, "dead_letters": 1}
    clock.now += 30  # the first second is now 61 s old: gone
    assert window.totals() == {"events": 5, "dead_letters": 1}
    clock.now += 120  # a bucket reused after a long quiet spell starts empty
    window.add("events", 2)
    assert window.totals() == {"events": 2}


def test_a_window_under_a_second_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 second"):
        LastMinute(0)


def test_status_lines_say_the_ratio_the_sources_the_lag_and_what_was_not_read() -> None:
    figures = OperatorFigures(
        events=200,
        cache_hits=196,
        cache_lookups=200,
        annotations={"cache": 196, "student": 3, "fallback": 1},
        degraded=1,
        dead_letters=2,
        lag={0: 3, 1: 0},
        unreachable={"worker-1 (http://127.0.0.1:9/metrics)": "Connection refused"},
    )
    lines = summary_lines(figures.to_json())
    assert lines[0] == (
        "last 60 s: 200 events, hit ratio 98.0%, annotated 196 by cache, 3 by student, 1 by fallback; "
        "1 degraded, 2 dead letters"
    )
    assert lines[1] == "lag of qu-annotate on qu.search-events.v1: 3 records (p0:3 p1:0)"
    assert lines[2] == "not read: worker-1 (http://127.0.0.1:9/metrics): Connection refused"
    assert summary_lines(OperatorFigures().to_json())[0].startswith("last 60 s: 0 events, hit ratio n/a (no lookups)")
