"""A replay's in-process student: the misses asked together are answered by one batch call."""

from __future__ import annotations

import asyncio

import pytest

from services.domain import Understanding
from services.replay.runner import _InProcessStudent


def test_concurrent_misses_share_one_batch_and_each_gets_its_answer() -> None:
    calls: list[list[str]] = []

    def answer(queries: list[str]) -> list[Understanding]:
        calls.append(queries)
        return [Understanding(version=q) for q in queries]

    student = _InProcessStudent(answer)

    async def go() -> list[str]:
        answers = await asyncio.gather(*(student.understand(q) for q in ["kale", "figs", "kale"]))
        later = await student.understand("oats")
        return [a.version for a in [*answers, later]]

    assert asyncio.run(go()) == ["kale", "figs", "kale", "oats"]
    assert calls == [["kale", "figs"], ["oats"]]


def test_a_failing_batch_fails_each_of_its_callers() -> None:
    def answer(queries: list[str]) -> list[Understanding]:
        raise RuntimeError("onnxruntime failed")

    student = _InProcessStudent(answer)

    async def go() -> list[BaseException | Understanding]:
        return await asyncio.gather(student.understand("a"), student.understand("b"), return_exceptions=True)

    results = asyncio.run(go())
    assert all(isinstance(r, RuntimeError) for r in results)


def test_an_async_batch_answer_is_awaited() -> None:
    async def answer(queries: list[str]) -> list[Understanding]:
        return [Understanding(version="async")] * len(queries)

    student = _InProcessStudent(answer)
    assert asyncio.run(student.understand("milk")).version == "async"


def test_a_short_answer_is_an_error_not_a_wrong_pairing() -> None:
    student = _InProcessStudent(lambda queries: [Understanding()])

    async def go() -> None:
        await asyncio.gather(student.understand("a"), student.understand("b"))

    with pytest.raises(Exception, match="answered 1 of 2"):
        asyncio.run(go())
