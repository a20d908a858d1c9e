"""The OpenAI-compatible teacher client against a real local server that speaks the protocol."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson
import pytest
from pydantic import SecretStr

from services.settings import Settings
from services.stack.ports import free_port
from services.teacher import TaskName, TeacherAnswerInvalid, TeacherContext, template_for
from services.teacher.llm_client import OpenAIChatBackend, TeacherRequestRejected, TeacherUnavailable
from services.teacher.prompts import RenderedPrompt
from tests.fixtures.openai_server import OpenAIServer, Reply, chat_reply, error_reply, raw_reply

pytestmark = pytest.mark.integration

T = TypeVar("T")
KEY = "sk-test-7c1d9f0e-THIS-MUST-NEVER-LEAK"
QUERY = "horizon organic 2% milk"
GOOD = {
    "reasoning": "brand, fat level, product type",
    "answer": {
        "tags": [
            {"role": "brand", "start": 0, "end": 15, "text": "horizon organic", "canonical": "Horizon Organic"},
            {"role": "attribute", "start": 16, "end": 18, "text": "2%", "canonical": "2%"},
            {"role": "product", "start": 19, "end": 23, "text": "milk", "canonical": "milk"},
        ]
    },
}


def run(coro: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def prompt(task: TaskName = TaskName.SRL, query: str = QUERY) -> RenderedPrompt:
    return template_for(task).render(query, TeacherContext(query))


def backend_for(server: OpenAIServer | str, **options: Any) -> OpenAIChatBackend:
    defaults: dict[str, Any] = {"max_retries": 3, "timeout_s": 5.0, "backoff_base_s": 0.01, "max_backoff_s": 2.0}
    base_url = server.base_url if isinstance(server, OpenAIServer) else server
    return OpenAIChatBackend(base_url, "test-model", SecretStr(KEY), **{**defaults, **options})


def with_backend(server: OpenAIServer | str, use: Callable[[OpenAIChatBackend], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        async with backend_for(server, **options) as backend:
            return await use(backend)

    return run(main())


def test_a_good_answer_with_structured_output_usage_and_cost(openai_server: OpenAIServer) -> None:
    openai_server.script(chat_reply(GOOD, prompt_tokens=1200, completion_tokens=300, delay_s=0.05))
    rendered = prompt()
    backend = backend_for(openai_server, price_per_1k_prompt=0.01, price_per_1k_completion=0.03)

    async def main() -> Any:
        async with backend:
            return await backend.answer(TaskName.SRL, rendered)

    answer = run(main())
    assert answer.task is TaskName.SRL and answer.data == GOOD["answer"] and answer.reasoning == GOOD["reasoning"]
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (1200, 300)
    assert answer.cost_usd == pytest.approx(0.012 + 0.009)
    assert (answer.backend, answer.version) == ("openai-chat", "test-model")
    [request] = openai_server.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.body["model"] == "test-model" and request.body["messages"] == rendered.messages
    assert request.body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "qu_srl", "schema": rendered.response_schema, "strict": True},
    }
    summary = backend.summary()
    assert summary["answers"] == 1 and summary["attempts"] == 1 and summary["retries"] == 0
    assert (summary["prompt_tokens"], summary["completion_tokens"]) == (1200, 300)
    assert summary["cost_usd"] == pytest.approx(0.021) and summary["response_format"] == "json_schema"
    srl = summary["per_task"]["srl"]
    assert (srl["requests"], srl["prompt_tokens_mean"], srl["completion_tokens_mean"]) == (1, 1200.0, 300.0)
    assert srl["seconds_mean"] > 0 and srl["completion_tokens_per_s"] > 0
    # tokens/s comes from the unrounded seconds: within the rounding of seconds_mean (3 decimals) of 300 / it
    assert (
        300 / (srl["seconds_mean"] + 0.0005) <= srl["completion_tokens_per_s"] <= 300 / (srl["seconds_mean"] - 0.0005)
    )


def test_429_is_retried_after_the_retry_after_it_names(openai_server: OpenAIServer) -> None:
    openai_server.script(error_reply(429, "slow down", headers={"Retry-After": "1"}), chat_reply(GOOD))
    answer = with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()))
    assert answer.data == GOOD["answer"]
    first, second = openai_server.requests
    assert 1.0 <= second.received_at - first.received_at < 1.5


def test_a_long_retry_after_is_capped_so_one_answer_cannot_stall_the_run(openai_server: OpenAIServer) -> None:
    openai_server.script(error_reply(429, "come back in an hour", headers={"Retry-After": "3600"}), chat_reply(GOOD))
    with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()), max_backoff_s=0.2)
    first, second = openai_server.requests
    assert second.received_at - first.received_at < 0.5


def test_5xx_is_retried_with_backoff_then_succeeds(openai_server: OpenAIServer) -> None:
    openai_server.script(error_reply(500, "boom"), error_reply(503, "overloaded"), chat_reply(GOOD))

    async def use(backend: OpenAIChatBackend) -> dict[str, Any]:
        await backend.answer(TaskName.SRL, prompt())
        return backend.summary()

    summary = with_backend(openai_server, use)
    assert len(openai_server.requests) == 3 and summary["retries"] == 2 and summary["answers"] == 1


def test_retries_are_bounded_and_the_error_says_what_to_do(openai_server: OpenAIServer) -> None:
    openai_server.default = error_reply(502, "bad gateway")
    with pytest.raises(
        TeacherUnavailable, match=r"gave up after 3 attempt\(s\) \(last: HTTP 502: bad gateway\)"
    ) as caught:
        with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()), max_retries=2)
    assert len(openai_server.requests) == 3
    assert "QU_TEACHER_MAX_RETRIES" in str(caught.value)


def test_transport_errors_are_retried() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    with pytest.raises(TeacherUnavailable, match="ConnectError"):
        with_backend(dead, lambda b: b.answer(TaskName.SRL, prompt()), max_retries=2)


@pytest.mark.parametrize(("status", "hint"), [(401, "QU_TEACHER_API_KEY"), (404, "QU_TEACHER_BASE_URL"), (422, "")])
def test_other_4xx_are_not_retried(openai_server: OpenAIServer, status: int, hint: str) -> None:
    openai_server.script(error_reply(status, "nope"), chat_reply(GOOD))
    with pytest.raises(TeacherRequestRejected, match=f"HTTP {status} for a srl request: nope.*{hint}") as caught:
        with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()))
    assert caught.value.status == status and len(openai_server.requests) == 1


def test_a_400_is_not_retried_it_only_tries_json_object_once(openai_server: OpenAIServer) -> None:
    openai_server.script(error_reply(400, "model does not exist"), error_reply(400, "model does not exist"))

    async def use(backend: OpenAIChatBackend) -> str:
        with pytest.raises(TeacherRequestRejected, match="HTTP 400"):
            await backend.answer(TaskName.SRL, prompt())
        return backend.response_format

    assert with_backend(openai_server, use) == "json_schema"  # the 400 was not about the schema: no switch
    assert [r.body["response_format"]["type"] for r in openai_server.requests] == ["json_schema", "json_object"]


def test_fallback_to_json_object_when_the_server_refuses_json_schema(
    openai_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    openai_server.reject_json_schema = True
    openai_server.script(chat_reply(GOOD), chat_reply(GOOD))

    async def use(backend: OpenAIChatBackend) -> str:
        await backend.answer(TaskName.SRL, prompt())
        await backend.answer(TaskName.SRL, prompt())  # goes straight to json_object
        return backend.response_format

    with caplog.at_level(logging.WARNING, logger="services.teacher.llm_client"):
        assert with_backend(openai_server, use) == "json_object_schema"
    formats = [r.body["response_format"] for r in openai_server.requests]
    assert [f["type"] for f in formats] == ["json_schema", "json_object", "json_object"]
    assert formats[1]["schema"] == formats[2]["schema"] == prompt().response_schema  # the schema goes along
    assert "refused json_schema (HTTP 400" in caplog.text and "using response_format json_object_schema" in caplog.text
    assert len([r for r in caplog.records if "json_schema" in r.getMessage()]) == 1  # said once, not per request


def test_a_refused_mode_is_not_asked_again_when_the_next_mode_times_out(openai_server: OpenAIServer) -> None:
    """A slow server (a CPU LLM) refuses json_schema, then times out on json_object: the next request must not
    start over with json_schema (found against llama.cpp: three refusals in a ten-request run)."""
    openai_server.reject_json_schema = True
    openai_server.script(Reply(delay_s=1.0), chat_reply(GOOD))

    async def use(backend: OpenAIChatBackend) -> str:
        with pytest.raises(TeacherUnavailable):
            await backend.answer(TaskName.SRL, prompt())
        await backend.answer(TaskName.SRL, prompt())
        return backend.response_format

    assert with_backend(openai_server, use, timeout_s=0.3, max_retries=0) == "json_object_schema"
    openai_server.wait_idle()
    assert [r.body["response_format"]["type"] for r in openai_server.requests] == [
        "json_schema",
        "json_object",
        "json_object",
    ]


def test_a_reply_cut_at_the_token_limit_is_invalid_says_so_and_is_not_asked_again(
    openai_server: OpenAIServer,
) -> None:
    rendered = prompt()
    cut = '{"reasoning": "The shopper names milk and the context lists it as a product type, so'
    openai_server.script(chat_reply(cut, completion_tokens=rendered.max_tokens, finish_reason="length"))

    async def use(backend: OpenAIChatBackend) -> dict[str, Any]:
        with pytest.raises(TeacherAnswerInvalid, match=f"cut at max_tokens {rendered.max_tokens}"):
            await backend.answer(TaskName.SRL, rendered)
        return backend.summary()

    summary = with_backend(openai_server, use)
    assert (summary["attempts"], summary["retries"], summary["invalid"], summary["schema_valid"]) == (1, 0, 1, 0)
    assert summary["completion_tokens"] == rendered.max_tokens  # paid for all the same


def test_the_concurrency_limit_holds_at_the_server(openai_server: OpenAIServer) -> None:
    openai_server.default = chat_reply(GOOD, prompt_tokens=10, completion_tokens=2, delay_s=0.05)

    async def use(backend: OpenAIChatBackend) -> dict[str, Any]:
        await asyncio.gather(*(backend.answer(TaskName.SRL, prompt()) for _ in range(15)))
        return backend.summary()

    summary = with_backend(openai_server, use, max_concurrency=3)
    assert openai_server.max_in_flight == 3  # reached, never passed
    assert (summary["answers"], summary["prompt_tokens"], summary["completion_tokens"]) == (15, 150, 30)


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (raw_reply(200, "{not json"), "body is not a chat completion"),
        (raw_reply(200, '{"choices": []}'), "body is not a chat completion"),
        (chat_reply("Sure! Here are the tags: brand=Acme"), "the reply is not JSON"),
        (chat_reply({"reasoning": "r", "answer": {"tags": [{"role": "brand"}]}}), "answer.tags.0.start"),
    ],
)
def test_malformed_replies_are_invalid_answers(openai_server: OpenAIServer, reply: Reply, problem: str) -> None:
    openai_server.script(reply)

    async def use(backend: OpenAIChatBackend) -> dict[str, Any]:
        with pytest.raises(TeacherAnswerInvalid, match="srl answer from openai-chat test-model") as caught:
            await backend.answer(TaskName.SRL, prompt())
        assert problem in str(caught.value)
        return backend.summary()

    summary = with_backend(openai_server, use)
    assert summary["invalid"] == 1 and summary["answers"] == 0 and len(openai_server.requests) == 1


def test_the_key_never_reaches_logs_exceptions_reprs_or_the_summary(
    openai_server: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    echo = f"Incorrect API key provided: {KEY}"  # some servers echo the key back
    openai_server.script(
        error_reply(429, echo, headers={"Retry-After": "0"}),
        error_reply(500, echo),
        raw_reply(200, f"<html>{KEY}</html>"),
        error_reply(401, echo),
    )
    errors: list[BaseException] = []

    async def use(backend: OpenAIChatBackend) -> list[str]:
        for _ in range(2):
            try:
                await backend.answer(TaskName.SRL, prompt())
            except Exception as exc:
                errors.append(exc)
        return [repr(backend), str(backend.summary()), orjson.dumps(backend.summary()).decode()]

    with caplog.at_level(logging.DEBUG):
        texts = with_backend(openai_server, use)
    assert [type(e) for e in errors] == [TeacherAnswerInvalid, TeacherRequestRejected]
    assert "***" in str(errors[1])  # the echoed key was scrubbed, the rest of the message kept
    assert "Incorrect API key provided: ***" in caplog.text  # the retries were logged, scrubbed
    assert openai_server.requests[0].headers["authorization"] == f"Bearer {KEY}"  # it was sent, in the header only
    for text in [caplog.text, *texts, *(str(e) for e in errors), *(repr(e) for e in errors)]:
        assert KEY not in text
    settings = Settings(teacher_api_key=SecretStr(KEY))
    assert KEY not in repr(settings) and KEY not in str(settings.model_dump())


def test_from_settings_uses_the_teacher_block(monkeypatch: pytest.MonkeyPatch, openai_server: OpenAIServer) -> None:
    monkeypatch.setenv("QU_TEACHER_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("QU_TEACHER_MODEL", "local-model")
    monkeypatch.setenv("QU_TEACHER_API_KEY", KEY)
    monkeypatch.setenv("QU_TEACHER_MAX_RETRIES", "0")
    openai_server.script(error_reply(503, "down"))

    async def main() -> None:
        async with OpenAIChatBackend.from_settings(Settings()) as backend:
            assert repr(backend) == f"OpenAIChatBackend(base_url={openai_server.base_url!r}, model='local-model')"
            await backend.answer(TaskName.SRL, prompt())

    with pytest.raises(TeacherUnavailable, match=r"after 1 attempt\(s\)"):
        run(main())
    [request] = openai_server.requests
    assert request.body["model"] == "local-model" and request.headers["authorization"] == f"Bearer {KEY}"


LLAMA_CPP_REFUSAL = 'response_format type must be one of "text" or "json_object", but got: json_schema'


def test_a_500_that_refuses_the_format_is_not_retried_the_next_mode_is_asked(openai_server: OpenAIServer) -> None:
    # llama.cpp's server answers HTTP 500 with a validation error to json_schema and takes json_object + schema.
    openai_server.script(error_reply(500, LLAMA_CPP_REFUSAL), chat_reply(GOOD), chat_reply(GOOD))

    async def use(backend: OpenAIChatBackend) -> dict[str, Any]:
        await backend.answer(TaskName.SRL, prompt())
        await backend.answer(TaskName.SRL, prompt())
        return backend.summary()

    summary = with_backend(openai_server, use)
    assert summary["response_format"] == "json_object_schema" and summary["retries"] == 0
    assert {r.body["max_tokens"] for r in openai_server.requests} == {prompt().max_tokens}  # sized to the answer
    bodies = [r.body["response_format"] for r in openai_server.requests]
    assert [b["type"] for b in bodies] == ["json_schema", "json_object", "json_object"]
    assert "schema" in bodies[1] and len(openai_server.requests) == 3  # the mode found is kept: no second refusal


def test_plain_text_with_the_schema_in_the_prompt_when_no_structured_mode_is_taken(openai_server: OpenAIServer) -> None:
    refusal = error_reply(500, "validation error: response_format is not supported")
    reply = "Sure! Here is the answer:\n```json\n" + orjson.dumps(GOOD).decode() + "\n```\nHope it helps."
    openai_server.script(refusal, refusal, refusal, chat_reply(reply))

    async def use(backend: OpenAIChatBackend) -> tuple[dict[str, Any], str]:
        answer = await backend.answer(TaskName.SRL, prompt())
        return answer.data, backend.response_format

    data, mode = with_backend(openai_server, use)
    assert mode == "text" and [t["text"] for t in data["tags"]] == ["horizon organic", "2%", "milk"]
    assert "response_format" not in openai_server.requests[-1].body


def test_a_server_that_takes_no_mode_at_all_is_told_with_the_setting(openai_server: OpenAIServer) -> None:
    openai_server.default = error_reply(500, "validation error: response_format is not supported")
    with pytest.raises(TeacherRequestRejected, match="QU_TEACHER_RESPONSE_FORMAT") as caught:
        with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()), response_format="json_object")
    assert caught.value.status == 500 and len(openai_server.requests) == 1  # a pinned mode is the only one tried


def test_a_500_that_says_the_request_is_invalid_is_not_retried_and_names_the_field(openai_server: OpenAIServer) -> None:
    openai_server.default = error_reply(500, "messages: must be a non-empty list of chat messages")
    with pytest.raises(TeacherRequestRejected, match=r"HTTP 500 .*messages.*change the prompts"):
        with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()))
    assert len(openai_server.requests) == 1


def test_a_run_spends_at_most_its_retry_budget(openai_server: OpenAIServer) -> None:
    openai_server.default = error_reply(503, "overloaded")

    async def use(backend: OpenAIChatBackend) -> None:
        for _ in range(3):
            with pytest.raises(TeacherUnavailable, match=r"QU_TEACHER_RETRY_BUDGET|QU_TEACHER_MAX_RETRIES"):
                await backend.answer(TaskName.SRL, prompt())

    with_backend(openai_server, use, max_retries=5, retry_budget=2)
    assert len(openai_server.requests) == 5  # 1 + 2 retries, then one attempt per later answer


def test_a_slow_answer_is_not_asked_again(openai_server: OpenAIServer) -> None:
    openai_server.script(chat_reply(GOOD, delay_s=1.5), chat_reply(GOOD))
    with pytest.raises(TeacherUnavailable, match=r"did not answer within 0.5 s.*QU_TEACHER_TIMEOUT_S"):
        with_backend(openai_server, lambda b: b.answer(TaskName.SRL, prompt()), timeout_s=0.5)
    assert len(openai_server.requests) == 1
    openai_server.wait_idle()  # the abandoned request ends before the next test counts requests


@pytest.mark.parametrize(
    ("base_url", "setting", "expected"),
    [
        ("http://127.0.0.1:8080/v1", None, 1),  # a local LLM answers one request at a time
        ("http://localhost:8080/v1", None, 1),
        ("https://api.openai.com/v1", None, 8),
        ("http://127.0.0.1:8080/v1", "4", 4),  # what the operator says wins
    ],
)
def test_concurrency_defaults_to_one_for_a_server_on_this_machine(
    monkeypatch: pytest.MonkeyPatch, base_url: str, setting: str | None, expected: int
) -> None:
    monkeypatch.setenv("QU_TEACHER_BASE_URL", base_url)
    if setting is not None:
        monkeypatch.setenv("QU_TEACHER_MAX_CONCURRENCY", setting)
    else:
        monkeypatch.delenv("QU_TEACHER_MAX_CONCURRENCY", raising=False)
    assert Settings().resolved_teacher_concurrency == expected
