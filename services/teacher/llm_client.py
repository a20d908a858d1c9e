"""The teacher over any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, a proxy).

What it adds to a bare HTTP call, and why:

* structured output, negotiated: ``json_schema`` (strict) with the task's schema, else ``json_object``
  carrying the schema (llama.cpp's form), else ``json_object``, else plain text with the schema in the
  prompt and the one JSON object of the reply extracted strictly. A server that refuses a mode (a 400 or
  422, or a 5xx whose body is a validation error about ``response_format``) is asked in the next, and
  the mode that worked is kept for the run and named in its summary (``QU_TEACHER_RESPONSE_FORMAT``
  pins one). The schema is also in the system prompt, and every reply is validated here either way;
* retries with exponential backoff and jitter on 429, transient 5xx and connection errors, honouring
  ``Retry-After`` (capped at ``max_backoff_s`` so one answer never stalls a run), within a budget per
  run (``QU_TEACHER_RETRY_BUDGET``), so a broken endpoint costs a few requests, not hundreds. Never on
  an error that will repeat (another 4xx, or a 5xx whose body says the request is invalid: llama.cpp
  answers 500 to a field it does not take), nor on a read timeout: a slow server still works on the
  request, and asking again only doubles its load;
* a concurrency limit (an ``asyncio.Semaphore``) so a run does not trip the provider's rate limit;
* token and cost accounting, in :attr:`OpenAIChatBackend.totals` for the run summary.

The API key is a ``SecretStr`` unwrapped in one place, the Authorization header of each request.
Server error text is scrubbed of it before it reaches a log or an exception (some servers echo the key).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import re
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from jsonschema import Draft202012Validator
from opentelemetry import trace
from pydantic import SecretStr

from services.errors import QuError, ServiceUnavailable
from services.settings import Settings
from services.teacher.backend import (
    TeacherAnswer,
    TeacherAnswerInvalid,
    Usage,
    UsageTotals,
    copied_example,
    parse_answer,
)
from services.teacher.context_types import TaskName
from services.teacher.prompts.base import RenderedPrompt

__all__ = ["OpenAIChatBackend", "TeacherRequestRejected", "TeacherUnavailable", "UsageTotals"]

log = logging.getLogger(__name__)

ResponseFormat = Literal["json_schema", "json_object_schema", "json_object", "text"]
# The order modes are tried in: the strictest the server takes wins.
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json_schema", "json_object_schema", "json_object", "text")
# A 5xx whose error says the request itself is wrong will fail the same way again (llama.cpp: HTTP 500
# "response_format type must be one of ..."); a transient 5xx (overloaded, loading) says nothing of the kind.
_REQUEST_INVALID = re.compile(
    r"\b(validation|must be|must have|is not supported|not supported|unsupported|unknown field|"
    r"unrecognized|extra fields? not permitted|invalid request|invalid value|expected one of)\b",
    re.IGNORECASE,
)
_FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|\bschema\b", re.IGNORECASE)
# Request fields an error may name, and the setting that changes each.
_FIELD_SETTINGS = {
    "response_format": "QU_TEACHER_RESPONSE_FORMAT",
    "json_schema": "QU_TEACHER_RESPONSE_FORMAT",
    "model": "QU_TEACHER_MODEL",
    "messages": "the prompts (services/teacher/prompts)",
    "temperature": "the backend's temperature",
}
_SNIPPET = 300
_HINTS = {
    401: "check QU_TEACHER_API_KEY",
    403: "check QU_TEACHER_API_KEY and that it may use QU_TEACHER_MODEL",
    404: "check QU_TEACHER_BASE_URL (the API root, ending in /v1) and QU_TEACHER_MODEL",
}


class TeacherUnavailable(ServiceUnavailable):
    """The teacher endpoint kept failing (429, 5xx, transport errors) through every retry."""


class TeacherRequestRejected(QuError):
    """The teacher endpoint refused a request with a 4xx a retry cannot fix (bad key, model, request)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class OpenAIChatBackend:
    """A :class:`~services.teacher.backend.TeacherBackend` over ``POST {base_url}/chat/completions``.

    ``base_url`` is the API root including ``/v1`` (as OpenAI's SDKs take it). Use it as an async
    context manager, or call :meth:`aclose`, to release its connections.
    """

    name = "openai-chat"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: SecretStr | None,
        *,
        max_concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        backoff_base_s: float = 0.5,
        max_backoff_s: float = 30.0,
        temperature: float = 0.0,
        response_format: ResponseFormat | Literal["auto"] = "auto",
        retry_budget: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0 or retry_budget < 0:
            raise ValueError(
                f"max_concurrency must be >= 1, max_retries >= 0, retry_budget >= 0 and timeout_s > 0 "
                f"(got {max_concurrency}, {max_retries}, {retry_budget}, {timeout_s})"
            )
        if api_key is not None and not isinstance(api_key, SecretStr):
            raise TypeError("api_key must be a pydantic SecretStr, so that it never prints")
        self.version = model
        self.model = model
        self.base_url = base_url.rstrip("/")
        self._url = f"{self.base_url}/chat/completions"
        self._api_key = api_key
        self._max_retries = max_retries
        self._prices = (price_per_1k_prompt, price_per_1k_completion)
        self._backoff = (backoff_base_s, max_backoff_s)
        self._temperature = temperature
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), limits=httpx.Limits(max_connections=max_concurrency), transport=transport
        )
        # "auto": negotiate from the strictest mode down; a pinned mode is the only one tried.
        self._modes = RESPONSE_FORMATS if response_format == "auto" else (response_format,)
        self.response_format: ResponseFormat = self._modes[0]
        self._timeout_s = timeout_s
        self._retries_left = retry_budget
        self._retry_budget = retry_budget
        self.totals = UsageTotals()
        self._per_task: dict[str, tuple[int, int, int, float]] = {}  # requests, prompt, completion tokens, seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatBackend:
        return cls(
            settings.teacher_base_url,
            settings.teacher_model,
            settings.teacher_api_key,
            max_concurrency=settings.resolved_teacher_concurrency,
            timeout_s=settings.teacher_timeout_s,
            max_retries=settings.teacher_max_retries,
            price_per_1k_prompt=settings.teacher_price_per_1k_prompt,
            price_per_1k_completion=settings.teacher_price_per_1k_completion,
            response_format=settings.teacher_response_format,
            retry_budget=settings.teacher_retry_budget,
        )

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(base_url={_redact_url(self.base_url)!r}, model={self.model!r})"

    async def __aenter__(self) -> OpenAIChatBackend:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def summary(self) -> dict[str, Any]:
        """Backend, endpoint (without credentials), the response format in use, the totals, and per task
        what a request took: its prompt and answer tokens on average, seconds, and answer tokens a second."""
        per_task = {
            task: {
                "requests": n,
                "prompt_tokens_mean": round(prompt / n, 1),
                "completion_tokens_mean": round(completion / n, 1),
                "seconds_mean": round(seconds / n, 3),
                "completion_tokens_per_s": round(completion / seconds, 2) if seconds > 0 else None,
            }
            for task, (n, prompt, completion, seconds) in sorted(self._per_task.items())
        }
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": _redact_url(self.base_url),
            "response_format": self.response_format,
            **self.totals.to_json(),
            "per_task": per_task,
        }

    def _timing(self, task: TaskName, usage: Usage, seconds: float) -> None:
        n, prompt, completion, total = self._per_task.get(task.value, (0, 0, 0, 0.0))
        self._per_task[task.value] = (
            n + 1,
            prompt + usage.prompt_tokens,
            completion + usage.completion_tokens,
            total + seconds,
        )

    async def answer(self, task: TaskName, prompt: RenderedPrompt) -> TeacherAnswer:
        if prompt.task != task:
            raise ValueError(f"the prompt was rendered for {prompt.task.value}, not {task.value}")
        async with self._semaphore:
            started = time.monotonic()
            try:
                content, usage, cut = await self._complete(task, prompt)
            except TeacherAnswerInvalid as exc:  # a reply that is no answer is paid for all the same
                self._timing(task, exc.usage, time.monotonic() - started)
                raise self._invalid(task, exc.problem, exc.usage, exc.raw) from None
            self._timing(task, usage, time.monotonic() - started)
        self.totals.schema_valid += matches_schema(content, prompt.response_schema)
        try:
            data, reasoning = parse_answer(task, content, prompt)
        except TeacherAnswerInvalid as exc:
            if cut:  # the reason it is invalid, said first: the answer was not finished
                problem = f"the reply was cut at max_tokens {prompt.max_tokens} before the answer ended ({exc.problem})"
                raise self._invalid(task, problem, usage, content) from None
            raise self._invalid(task, exc.problem, usage, content) from None
        copied = copied_example(task, data, prompt)
        if copied:
            raise self._invalid(task, f"the answer repeats the example of {copied!r}, another query", usage, content)
        cost = self._pay(usage)
        self.totals.answers += 1
        return TeacherAnswer(task, data, reasoning, usage, cost, self.name, self.version, raw=content)

    def _pay(self, usage: Usage) -> float:
        """Count a reply's tokens and cost in the run's totals (every reply: valid, invalid or copied)."""
        cost = usage.prompt_tokens / 1000 * self._prices[0] + usage.completion_tokens / 1000 * self._prices[1]
        self.totals.prompt_tokens += usage.prompt_tokens
        self.totals.completion_tokens += usage.completion_tokens
        self.totals.cost_usd += cost
        return cost

    def _invalid(self, task: TaskName, problem: str, usage: Usage, raw: str = "") -> TeacherAnswerInvalid:
        self.totals.invalid += 1
        cost = self._pay(usage)
        backend = f"{self.name} {self.model}"
        return TeacherAnswerInvalid(task, problem, backend=backend, usage=usage, cost_usd=cost, raw=raw)

    def _body(self, prompt: RenderedPrompt, fmt: ResponseFormat) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": prompt.messages, "temperature": self._temperature}
        if prompt.max_tokens:
            body["max_tokens"] = prompt.max_tokens  # the longest valid answer: a rambling reply is cut, not waited for
        if fmt == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": f"qu_{prompt.task.value}", "schema": prompt.response_schema, "strict": True},
            }
        elif fmt == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": prompt.response_schema}
        elif fmt == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body  # "text": no response_format; the schema is in the prompt

    async def _complete(self, task: TaskName, prompt: RenderedPrompt) -> tuple[str, Usage, bool]:
        """The reply's text (the one JSON object of a plain-text reply), its usage, and whether it was cut at
        the token limit."""
        first = self._modes.index(self.response_format)
        refusals: list[str] = []
        for i, fmt in enumerate(self._modes[first:], start=first):
            response = await self._post(self._body(prompt, fmt))
            if response.is_success:
                if fmt != self.response_format:  # a bare 400 refused the last mode: this one works, keep it
                    log.warning(
                        "the teacher at %s refused %s; using response_format %s from now on",
                        _redact_url(self.base_url),
                        "; ".join(refusals),
                        fmt,
                    )
                    self.response_format = fmt
                content, usage, cut = self._decode(task, response)
                return (_one_json_object(content) if fmt == "text" else content), usage, cut
            if not _refuses_the_format(response, self._error_text(response), first=not refusals):
                break
            self.totals.fallbacks += 1
            refusals.append(f"{fmt} (HTTP {response.status_code}: {self._error_text(response)})")
            certain = bool(_FORMAT_WORDS.search(self._error_text(response)))  # not a bare 400: it names the format
            if certain and i + 1 < len(self._modes) and self.response_format == fmt:
                # Remembered at once, not after the next mode's first success: a slow server may time that
                # request out, and the next request must not ask for the refused mode again.
                self.response_format = self._modes[i + 1]
                log.warning(
                    "the teacher at %s refused %s; using response_format %s from now on: the schema stays in "
                    "the prompt and every answer is still validated here",
                    _redact_url(self.base_url),
                    refusals[-1],
                    self.response_format,
                )
        raise self._rejected(task, response, refusals)

    def _rejected(self, task: TaskName, response: httpx.Response, refusals: list[str]) -> TeacherRequestRejected:
        """Why the endpoint will keep refusing: its words, the request field it names and the setting to change."""
        text = self._error_text(response)
        field = next((f for f in _FIELD_SETTINGS if f in text), None)
        if refusals and len(refusals) == len(self._modes):
            hint = "it took no structured-output mode: set QU_TEACHER_RESPONSE_FORMAT=text, or use another server"
        elif field is not None:
            hint = f"the request's {field} is refused: change {_FIELD_SETTINGS[field]}"
        else:
            hint = _HINTS.get(response.status_code, "the request was refused; a retry will not help")
        return TeacherRequestRejected(
            response.status_code,
            f"the teacher at {_redact_url(self.base_url)} answered HTTP {response.status_code} for a "
            f"{task.value} request: {text} ({hint})",
        )

    async def _post(self, body: dict[str, Any]) -> httpx.Response:
        """POST with retries; the last response when it is a success or a 4xx other than 429."""
        payload = orjson.dumps(body)
        problem = ""
        for attempt in range(self._max_retries + 1):
            self.totals.attempts += 1
            retry_after: float | None = None
            try:
                response = await self._client.post(self._url, content=payload, headers=self._headers())
            except httpx.ReadTimeout:
                raise TeacherUnavailable(
                    f"the teacher at {_redact_url(self.base_url)} did not answer within {self._timeout_s:g} s; a "
                    "request is not sent again while the server may still work on it: raise QU_TEACHER_TIMEOUT_S "
                    "for a slow (CPU) server, or lower QU_TEACHER_MAX_CONCURRENCY"
                ) from None
            except httpx.TransportError as exc:  # connection refused or reset, connect timeouts
                problem = f"{type(exc).__name__}: {self._scrub(str(exc))}"
            else:
                if response.status_code != 429 and response.status_code < 500:
                    return response
                if response.status_code >= 500 and _REQUEST_INVALID.search(self._error_text(response)):
                    return response  # the request itself is wrong: the same request fails the same way
                problem = f"HTTP {response.status_code}: {self._error_text(response)}"
                retry_after = _retry_after_s(response.headers.get("retry-after"))
            if attempt == self._max_retries:
                break
            if self._retries_left == 0:
                raise TeacherUnavailable(
                    f"the teacher at {_redact_url(self.base_url)} failed ({problem}) and this run's "
                    f"{self._retry_budget} retries are spent: check the endpoint, or raise QU_TEACHER_RETRY_BUDGET"
                )
            self._retries_left -= 1
            delay = self._delay(attempt, retry_after)
            self.totals.retries += 1
            # On the caller's span (the pipeline's per-call span), so a trace shows what each retry waited for.
            trace.get_current_span().add_event(
                "retry", {"qu.attempt": attempt + 1, "qu.problem": problem[:300], "qu.delay_s": round(delay, 3)}
            )
            log.warning(
                "teacher request to %s failed (%s); retry %d of %d in %.2f s",
                _redact_url(self._url),
                problem,
                attempt + 1,
                self._max_retries,
                delay,
            )
            await asyncio.sleep(delay)
        raise TeacherUnavailable(
            f"the teacher at {_redact_url(self.base_url)} gave up after {self._max_retries + 1} attempt(s) "
            f"(last: {problem}); "
            "check the endpoint is up, or lower QU_TEACHER_MAX_CONCURRENCY / raise QU_TEACHER_MAX_RETRIES if it "
            "is rate limiting"
        )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base, cap = self._backoff
        if retry_after is not None:
            # The server said when; a little jitter keeps many workers from returning at the same instant.
            return min(cap, retry_after + random.uniform(0, base))
        ceiling = min(cap, base * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    def _scrub(self, text: str) -> str:
        if self._api_key is not None:
            secret = self._api_key.get_secret_value()
            if secret:
                text = text.replace(secret, "***")
        return text

    def _error_text(self, response: httpx.Response) -> str:
        """The server's error message (OpenAI's ``error.message`` when present), short and key-free."""
        text = response.text
        try:
            decoded = orjson.loads(response.content)
            if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
                text = str(decoded["error"].get("message", text))
        except orjson.JSONDecodeError:
            pass
        text = " ".join(self._scrub(text).split())
        return text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "") if text else "(empty body)"

    def _decode(self, task: TaskName, response: httpx.Response) -> tuple[str, Usage, bool]:
        """The reply's content and token usage; a body that is not a chat completion is an invalid answer."""
        try:
            body = orjson.loads(response.content)
            choice = body["choices"][0]
            message = choice["message"]
            raw_usage = body.get("usage") or {}
            usage = Usage(int(raw_usage.get("prompt_tokens", 0)), int(raw_usage.get("completion_tokens", 0)))
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise TeacherAnswerInvalid(
                task,
                f"the server's HTTP {response.status_code} body is not a chat completion "
                f"({type(exc).__name__}: {self._scrub(str(exc))[:_SNIPPET]})",
                backend=f"{self.name} {self.model}",
            ) from None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            refusal = message.get("refusal") if isinstance(message, dict) else None
            why = "the model refused" if refusal else "the reply has no text content"
            raw = str(refusal or "")  # the model's words stay out of the problem
            raise TeacherAnswerInvalid(task, why, backend=f"{self.name} {self.model}", usage=usage, raw=raw)
        return content, usage, choice.get("finish_reason") == "length"


def matches_schema(content: str, schema: dict[str, Any]) -> bool:
    """Whether a reply is one JSON object valid against the answer's JSON schema (structure only: offsets inside
    the query, values the context supports and copied examples are parse_answer's and copied_example's checks)."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and not any(_validator(schema).iter_errors(value))


@functools.lru_cache(maxsize=16)
def _cached_validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    return _cached_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _redact_url(url: str) -> str:
    """``url`` without user:password (some proxies take credentials in the URL)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _refuses_the_format(response: httpx.Response, text: str, first: bool) -> bool:
    """Whether a failed response refuses the structured-output mode, so the next mode may work: a 400/422
    or a validation 5xx that names the format, or a bare 400 to the first mode (many servers do not say
    why); a 400 for another reason then fails the second mode too and is reported as it is."""
    names_format = bool(_FORMAT_WORDS.search(text))
    if response.status_code in (400, 422):
        return names_format or (first and response.status_code == 400)
    return response.status_code >= 500 and names_format and bool(_REQUEST_INVALID.search(text))


def _one_json_object(content: str) -> str:
    """The one JSON object of a plain-text reply (bare, or in a ```json fence, prose around it allowed);
    the text as it is when there is none or more than one, so validation says what is wrong."""
    start = content.find("{")
    if start < 0:
        return content
    try:
        _, end = _DECODER.raw_decode(content, start)
    except json.JSONDecodeError:
        return content
    if "{" in content[end:]:
        return content  # two objects: which one is the answer is a guess
    return content[start:end]


_DECODER = json.JSONDecoder()
