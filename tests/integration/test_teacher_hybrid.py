"""The hybrid teacher on the demo catalog: the LLM (the project's fixture server) proposes, the catalog teacher
stands behind it, and the curriculum keeps both answers with where each came from."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from services.catalog.artifacts import Catalog
from services.embeddings import SentenceEmbedder
from services.teacher.catalog_teacher import CatalogTeacher
from services.teacher.context import ExamplePool
from services.teacher.context_types import TaskName
from services.teacher.curriculum import CurriculumRun, read_records
from services.teacher.hybrid import HybridPolicy, Preference
from services.teacher.llm_client import OpenAIChatBackend
from services.teacher.pipeline import TeacherPipeline
from services.teacher.run import RunOptions, TeacherRun, run_fingerprint
from tests.fixtures.openai_server import OpenAIServer, Reply, chat_reply
from tests.integration.test_teacher_run import Published, demo, pipeline_for, selected

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["demo"]  # the module fixture, shared with the plain run's tests

_QUERY = re.compile(r"<query>\s*(\"(?:[^\"\\]|\\.)*\")\s*</query>")
LLM_FIRST = HybridPolicy({task: Preference.LLM_FIRST for task in TaskName}, chosen_on={"labels": "a test"})


def asked(body: Any) -> tuple[TaskName, str]:
    """The task (the response format's name) and the query (the user message's query block) of a request."""
    task = TaskName(body["response_format"]["json_schema"]["name"].removeprefix("qu_"))
    found = _QUERY.search(body["messages"][-1]["content"])
    assert found is not None
    return task, json.loads(found.group(1))


def llm_answers(body: Any) -> Reply:
    """An LLM that is right about "milk", wrong about "bananas" (spans past the query), and whose milk
    substitute is nothing the catalog sells (the guardrails drop it)."""
    task, query = asked(body)
    if task is TaskName.SRL and query == "milk":
        tags = [{"role": "product", "start": 0, "end": 4, "text": "milk", "canonical": "milk"}]
        return chat_reply({"reasoning": "milk is the product.", "answer": {"tags": tags}})
    if task is TaskName.SRL:
        tags = [{"role": "product", "start": 0, "end": 40, "text": query, "canonical": query}]
        return chat_reply({"reasoning": "all of it.", "answer": {"tags": tags}})
    if task is TaskName.SUBSTITUTES and query == "milk":
        rewrites = [{"query": "rocket fuel", "score": 0.9}]
        return chat_reply({"reasoning": "a drink.", "answer": {"rewrites": rewrites}})
    return chat_reply("I am not sure.")  # not JSON: invalid


def hybrid_run(
    demo: Catalog, embedder: SentenceEmbedder, root: Path, server: OpenAIServer, policy: HybridPolicy | None
) -> tuple[dict[str, Any], Published]:
    queries = selected(["milk", "bananas"])

    async def go() -> tuple[dict[str, Any], Published]:
        async with OpenAIChatBackend(server.base_url, "test-model", None, max_retries=0) as backend:
            pipeline = pipeline_for(demo, embedder, backend, fallback=CatalogTeacher(demo), policy=policy)
            published = Published()
            run = TeacherRun(
                pipeline,
                CurriculumRun(root, run_fingerprint(queries, pipeline, {})),
                ExamplePool(embedder),
                options=RunOptions(chunk_size=4),
                publisher=published,
            )
            return await run.run(queries), published

    return asyncio.run(go())


def test_an_invalid_or_dropped_llm_answer_leaves_the_catalog_answer_standing_and_both_are_kept(
    demo: Catalog, embedder: SentenceEmbedder, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.responder = llm_answers
    summary, published = hybrid_run(demo, embedder, tmp_path, openai_server, LLM_FIRST)
    records = {(r.query, r.task): r for r in read_records(tmp_path)}
    assert len(records) == 2 * len(TaskName)  # one per query and task, the other teacher's answer inside it

    milk = records[("milk", "srl")]
    assert milk.choice.startswith("llm: llm_first: the LLM's answer kept something")
    assert milk.teacher_backend == "openai-chat" and milk.alternative["source"] == "catalog"
    assert milk.alternative["status"] == "answered" and milk.alternative["answer"]["tags"]

    bananas = records[("bananas", "srl")]
    assert bananas.status == "answered" and bananas.teacher_backend == "catalog-teacher"
    assert bananas.choice == "catalog: llm_first: the LLM's answer was invalid"
    assert bananas.alternative["source"] == "llm" and bananas.alternative["status"] == "invalid"
    assert "tags.0" in bananas.alternative["problem"]
    assert '"end":40' in bananas.alternative["raw_reply"].replace(" ", "")  # the reply as written, for analysis
    assert milk.raw_reply and not bananas.raw_reply  # the LLM's reply; the catalog teacher writes none
    assert bananas.prompt_tokens == 100  # the LLM's invalid reply was paid for: its tokens are recorded

    substitutes = records[("milk", "substitutes")]
    assert substitutes.teacher_backend == "catalog-teacher"
    assert substitutes.choice == "catalog: llm_first: the guardrails dropped all of the LLM's answer"
    dropped = substitutes.alternative["guardrails"]
    assert [d["item"] for d in dropped] == ["substitute=rocket fuel"] and not dropped[0]["kept"]
    assert substitutes.answer["rewrites"]  # the catalog teacher's substitutes stand

    hybrid = summary["hybrid"]
    assert hybrid["policy"] == LLM_FIRST.fingerprint() and hybrid["policy_chosen_on"] == {"labels": "a test"}
    assert hybrid["published_from"]["srl"] == {"catalog": 1, "llm": 1}
    assert hybrid["llm_status"]["srl"] == {"answered": 1, "invalid": 1}
    assert summary["current"] is True and len(published.runs[0][1]) == 2


def test_without_a_chosen_policy_a_hybrid_run_publishes_what_the_catalog_teacher_alone_does(
    demo: Catalog, embedder: SentenceEmbedder, tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.responder = llm_answers
    _summary, hybrid = hybrid_run(demo, embedder, tmp_path / "hybrid", openai_server, None)
    alone = pipeline_for(demo, embedder, CatalogTeacher(demo))
    _, catalog = _plain_run(alone, tmp_path / "catalog", embedder)

    def published(runs: Published) -> dict[str, tuple[object, ...]]:
        [(_, entries)] = runs.runs
        return {q: (u.tags, u.categories, sorted(r.query for r in u.rewrites)) for q, u, _ in entries}

    assert published(hybrid) == published(catalog)
    records = read_records(tmp_path / "hybrid")
    assert all(r.choice == "catalog: the policy publishes the catalog teacher's answer" for r in records)
    assert {r.alternative["source"] for r in records} == {"llm"}


def _plain_run(pipeline: TeacherPipeline, root: Path, embedder: SentenceEmbedder) -> tuple[dict[str, Any], Published]:
    queries = selected(["milk", "bananas"])
    published = Published()
    run = TeacherRun(
        pipeline,
        CurriculumRun(root, run_fingerprint(queries, pipeline, {})),
        ExamplePool(embedder),
        publisher=published,
    )
    return asyncio.run(run.run(queries)), published
