"""`qu guardrails calibrate` through the CLI on the demo catalog with the real MiniLM: repeatable, complete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_calibrate_is_repeatable_and_names_a_missing_file(cli: Cli, state_dir: Path) -> None:
    assert cli("catalog", "import", "--demo").exit_code == 0
    events = state_dir / "traffic" / "events.jsonl"
    assert cli("traffic", "--events", "400", "--seed", "5", "--out", events).exit_code == 0
    labels = events.with_name("events.labels.jsonl")

    first = cli("guardrails", "calibrate", "--labels", labels, "--json")
    assert first.exit_code == 0, first.stderr
    report = json.loads(first.stdout)
    again = json.loads(cli("guardrails", "calibrate", "--labels", labels, "--json").stdout)
    assert report == again, "the same catalog, labels and options give the same figures"
    text = json.dumps(report)
    for name in ("category_min_similarity", "rewrite_min_similarity", "substitute_category_level"):
        assert name in text
    assert "QU_REWRITE_MIN_SIMILARITY=" in text

    missing = cli("guardrails", "calibrate", "--labels", state_dir / "nope.jsonl")
    assert missing.exit_code == 1 and "nope.jsonl" in missing.stderr
