"""The teacher against a real local LLM server nobody here wrote: llama-cpp-python serving SmolLM2-135M.

What is asserted is the protocol, not the model's wisdom (a 135M model answers little correctly): the
backend negotiates the structured-output mode this server takes, sends each task once, counts every
reply's tokens, and records every answer, valid or not, with nothing lost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.catalog.artifacts import Catalog
from services.embeddings import SentenceEmbedder
from services.settings import Settings
from services.stack.llm_server import LocalLLMServer, served_model
from services.teacher.context import ExamplePool
from services.teacher.context_types import TaskName
from services.teacher.curriculum import CurriculumRun, read_records
from services.teacher.llm_client import OpenAIChatBackend
from services.teacher.run import RunOptions, TeacherRun, run_fingerprint
from tests.integration.test_teacher_run import demo, pipeline_for, selected

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["demo"]

QUERIES = ("milk", "organic bananas")


def test_the_teacher_runs_all_five_tasks_against_the_real_local_server(
    demo: Catalog, embedder: SentenceEmbedder, tmp_path: Path, local_llm: LocalLLMServer, clean_env: None
) -> None:
    model = served_model(local_llm.base_url)
    # A generous timeout: CI's 2 cores are shared with the test itself (a request takes 5-10 s on a quiet machine).
    settings = Settings(
        state_dir=tmp_path, teacher_base_url=local_llm.base_url, teacher_model=model, teacher_timeout_s=300
    )
    assert settings.resolved_teacher_concurrency == 1  # a loopback server answers one request at a time

    async def go() -> dict[str, Any]:
        async with OpenAIChatBackend.from_settings(settings) as backend:
            pipeline = pipeline_for(
                demo, embedder, backend, concurrency=1, max_context_tokens=settings.teacher_context_max_tokens
            )
            chosen = selected(QUERIES)
            run = TeacherRun(
                pipeline,
                CurriculumRun(tmp_path, run_fingerprint(chosen, pipeline, {})),
                ExamplePool(embedder),
                options=RunOptions(chunk_size=2, batch_size=1, save_every_s=settings.teacher_save_every_s),
            )
            return await run.run(chosen)

    summary = asyncio.run(go())
    session = summary["teacher"]["this_session"]
    requests = len(QUERIES) * len(TaskName)
    # llama.cpp's server refuses json_schema (an HTTP 500 naming the field) and takes json_object with the
    # schema: one refused request, not retried, then every task once.
    assert session["response_format"] == "json_object_schema"
    assert session["fallbacks"] == 1 and session["retries"] == 0
    assert session["attempts"] == requests + 1
    assert session["answers"] + session["invalid"] == requests  # every reply judged: valid or invalid
    assert summary["stopped_tasks"] == {}  # no task refused or unavailable: no protocol failure
    assert {task: sum(counts.values()) for task, counts in summary["tasks"].items()} == {
        task.value: len(QUERIES) for task in TaskName
    }

    records = read_records(Path(summary["curriculum"]["path"]))  # the run's directory: `current` only if SRL was valid
    assert len(records) == requests
    assert {r.status for r in records} <= {"answered", "invalid"}
    # Every reply's tokens are in its record, an invalid one's too; the totals are the records' sum.
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in records)
    assert summary["teacher"]["usage"]["prompt_tokens"] == session["prompt_tokens"]
    assert all(r.teacher_version == model for r in records if r.status == "answered")
    for record in records:
        if record.status == "invalid":
            assert record.problem and not record.teacher_answer  # why, and no half-answer kept
            assert record.raw_reply  # what the model wrote, kept apart from the problem text
    # Per task, what a request took (the summary's timing is what docs/BENCHMARKS.md quotes).
    assert set(session["per_task"]) == {task.value for task in TaskName}
    assert all(row["requests"] == len(QUERIES) for row in session["per_task"].values())
    assert summary["current"] == any(r.valid_srl for r in records)
