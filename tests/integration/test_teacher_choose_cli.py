"""`qu teacher choose` on the demo catalog, the LLM being the project's fixture server: a policy chosen on
labelled queries, saved where `qu teacher run --backend hybrid` reads it, with the figures it was chosen on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.teacher.context_types import TaskName
from services.teacher.hybrid import POLICY_FILE, HybridPolicy, Preference
from tests.conftest import CliFactory
from tests.fixtures.openai_server import OpenAIServer, Reply, chat_reply
from tests.integration.test_teacher_hybrid import asked

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def spans_right_rest_wrong(body: Any) -> Reply:
    """An LLM whose spans are right (one product: the whole query) and whose other answers are invalid."""
    task, query = asked(body)
    if task is TaskName.SRL:
        tags = [{"role": "product", "start": 0, "end": len(query), "text": query, "canonical": query}]
        return chat_reply({"reasoning": "the query names one product.", "answer": {"tags": tags}})
    return chat_reply("no idea")


def test_choose_scores_every_combination_per_task_and_saves_the_policy(
    cli_with_env: CliFactory, state_dir: Path, openai_server: OpenAIServer
) -> None:
    openai_server.responder = spans_right_rest_wrong
    cli = cli_with_env({"QU_STATE_DIR": str(state_dir), "QU_TEACHER_BASE_URL": openai_server.base_url})
    assert cli("catalog", "import", "--demo").exit_code == 0
    events = state_dir / "traffic" / "events.jsonl"
    assert cli("traffic", "--events", "300", "--seed", "2", "--out", events).exit_code == 0
    assert cli("conversions", "build", events.with_name("events.conversions.jsonl")).exit_code == 0
    labels = events.with_name("events.labels.jsonl")

    result = cli("teacher", "choose", "--labels", labels, "--limit", "6", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    scores = report["scores"]
    assert set(scores) == {task.value for task in TaskName}
    assert all(set(figures) == {"catalog", "llm", "llm_first", "catalog_first"} for figures in scores.values())
    # The LLM alone wrote no category and no rewrite: every one of its answers but the spans was invalid.
    assert scores["category"]["llm"]["top1"] == 0.0 and scores["substitutes"]["llm"]["coverage"] == 0.0
    # What is chosen is what the figures favour (ties to the catalog teacher): the rule, not a guess.
    policy = HybridPolicy.load(state_dir / POLICY_FILE)
    assert report["saved"] == str(state_dir / POLICY_FILE) and policy.chosen
    assert policy.chosen_on["queries"] == 6 and policy.chosen_on["endpoint"] == openai_server.base_url
    srl = scores["srl"]
    best = max(("catalog", "catalog_first", "llm_first"), key=lambda v: (srl[v]["f1"], v == "catalog"))
    assert policy.preference(TaskName.SRL) is Preference(best)
    assert policy.preference(TaskName.CATEGORY) is Preference.CATALOG  # the LLM added nothing there
    # Each query was taught once by each teacher (five tasks), whatever the number of combinations scored.
    assert report["llm"]["answers"] + report["llm"]["invalid"] == 6 * len(TaskName)

    bad = cli("teacher", "choose", "--labels", state_dir / "missing.jsonl")
    assert bad.exit_code != 0 and "missing.jsonl" in bad.stderr
