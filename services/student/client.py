"""The student on Triton, seen from the real-time path: ``await client.understand(normalized_query)``.

Concurrent calls within ``batch_window_ms`` travel as ONE gRPC request of up to ``max_batch``
queries (``QUERY`` [n, 1] -> ``TAGS_JSON`` [n, 1], see ``triton_models/qu_student``), so a burst
of cache misses costs one round trip, not one each; every caller still gets its own answer.

A call never waits past ``deadline_ms``: late, refused or failed calls raise
:class:`StudentUnavailable` and the caller answers from the fallback tagger. While Triton keeps
failing or keeps missing the deadline, a :class:`~services.circuit_breaker.CircuitBreaker` refuses
calls at once (:class:`~services.circuit_breaker.CircuitOpen`) instead of letting each wait the whole
deadline, and lets one probe through every ``open_s`` to see it back. The gRPC channel
survives a Triton restart: its reconnect backoff is capped (``RECONNECT_BACKOFF_MS``) so the
first calls after the server is back succeed instead of failing through gRPC's default backoff,
which grows to two minutes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode

from services.circuit_breaker import CircuitBreaker
from services.domain import Understanding
from services.errors import InvalidAnswer, QuError, ServiceUnavailable
from services.normalize import normalize_query
from services.student.contract import INPUT, OUTPUT
from services.telemetry import TRACER_NAME

if TYPE_CHECKING:
    from tritonclient.grpc.aio import InferenceServerClient

RECONNECT_BACKOFF_MS = 250
# The gRPC method every request calls: the span's name, as OpenTelemetry's RPC conventions write it.
_RPC_SERVICE, _RPC_METHOD = "inference.GRPCInferenceService", "ModelInfer"
# gRPC's own limits are 4 MiB; Triton's are INT32_MAX. A batch of 64 answers is far below either.
_MAX_MESSAGE = 2**31 - 1


class StudentUnavailable(ServiceUnavailable):
    """The student did not answer in time, or Triton refused or failed the request (the message says which).

    A ServiceUnavailable: the annotate handler answers from the fallback tagger instead.
    """


class MalformedAnswer(StudentUnavailable, InvalidAnswer):
    """Triton answered in time, but the answer for this query is not an Understanding: only this caller fails,
    and the circuit does not count it (the server is up; opening the circuit would not make it answer better)."""


class InvalidStudentQuery(QuError, ValueError):
    """The query is not something the student accepts: empty, or not ``normalize_query`` output."""


@dataclass(slots=True)
class _Call:
    query: str
    future: asyncio.Future[Understanding]
    deadline: float  # event-loop time
    caller: SpanContext | None = None  # the caller's span when it is sampled: the request's span joins its trace


class StudentClient:
    """Async, micro-batching client of the Triton student. Cheap to build; connects on first use."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        deadline_ms: float,
        batch_window_ms: float,
        max_batch: int,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if deadline_ms <= 0 or batch_window_ms < 0 or max_batch < 1:
            raise ValueError(
                f"deadline_ms must be > 0, batch_window_ms >= 0 and max_batch >= 1; got {deadline_ms}, "
                f"{batch_window_ms}, {max_batch} (QU_STUDENT_DEADLINE_MS, QU_STUDENT_BATCH_WINDOW_MS, "
                "QU_STUDENT_MAX_BATCH)"
            )
        self.url = url
        self.model = model
        self.deadline_s = deadline_ms / 1000
        self.window_s = batch_window_ms / 1000
        self.max_batch = max_batch
        self.breaker = breaker
        self.requests_sent = 0  # gRPC requests, and the queries they carried: batching at work
        self.queries_sent = 0
        self._triton: InferenceServerClient | None = None
        self._pending: list[_Call] = []
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight: dict[asyncio.Task[None], list[_Call]] = {}
        self._closed = False

    def _client(self) -> InferenceServerClient:
        # Made on first use, inside the running event loop: a grpc.aio channel belongs to the loop it was made in.
        if self._triton is None:
            from tritonclient.grpc.aio import InferenceServerClient

            self._triton = InferenceServerClient(
                self.url,
                channel_args=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                    ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
                ],
            )
        return self._triton

    async def understand(self, normalized_query: str) -> Understanding:
        """The student's answer for one normalized query; raises StudentUnavailable within the deadline."""
        if self._closed:
            raise StudentUnavailable(f"the student client for {self.model} at {self.url} is closed")
        if not normalized_query or normalize_query(normalized_query) != normalized_query:
            raise InvalidStudentQuery(
                f"{normalized_query[:80]!r} is not a normalized query: pass services.normalize.normalize_query(text), "
                "and send no empty query to the student"
            )
        if self.breaker is not None:
            self.breaker.check()  # raises CircuitOpen at once while Triton is known to be failing
        loop = asyncio.get_running_loop()
        caller = trace.get_current_span().get_span_context()
        call = _Call(
            normalized_query,
            loop.create_future(),
            loop.time() + self.deadline_s,
            caller if caller.trace_flags.sampled else None,
        )
        self._pending.append(call)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.window_s, self._flush)
        try:
            understanding = await asyncio.wait_for(call.future, self.deadline_s)
        except TimeoutError:
            # wait_for cancelled the future: a batch not yet sent drops it, a late answer is discarded.
            late = StudentUnavailable(
                f"{self.model} at {self.url} did not answer {normalized_query[:80]!r} within "
                f"{self.deadline_s * 1000:.0f} ms (student_deadline_ms)"
            )
            self._report(late)
            raise late from None
        except StudentUnavailable as err:
            self._report(err)
            raise
        self._report(None)
        return understanding

    def _report(self, error: StudentUnavailable | None) -> None:
        if self.breaker is None:
            return
        if error is None or isinstance(error, InvalidAnswer):
            self.breaker.succeeded()  # Triton answered in time
        else:
            self.breaker.failed(error)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch = [c for c in self._pending[: self.max_batch] if not c.future.done()]
            del self._pending[: self.max_batch]
            if batch:
                task = asyncio.get_running_loop().create_task(self._send(batch))
                self._in_flight[task] = batch
                task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        batch = self._in_flight.pop(task, None) or []
        # _send answers every caller itself; should a bug escape it anyway, its callers hear of it now (not at
        # their deadline) and the exception is retrieved here, not reported as "never retrieved" by the loop.
        if not task.cancelled() and (err := task.exception()) is not None:
            _fail(batch, f"{self.model} at {self.url}: reading a batch of {len(batch)} failed with {err!r}")

    async def _send(self, batch: list[_Call]) -> None:
        from tritonclient.grpc import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException

        # The request lives as long as its most patient caller; nobody waits for it after that.
        timeout = max(c.deadline for c in batch) - asyncio.get_running_loop().time()
        query = InferInput(INPUT, [len(batch), 1], "BYTES")
        query.set_data_from_numpy(np.array([[c.query.encode()] for c in batch], dtype=np.object_))
        self.requests_sent += 1
        self.queries_sent += len(batch)
        span, metadata = self._trace(batch)
        try:
            result = await self._client().infer(
                self.model,
                [query],
                outputs=[InferRequestedOutput(OUTPUT)],
                client_timeout=max(timeout, 0.001),
                headers=metadata,
            )
            raw = result.as_numpy(OUTPUT)
        except InferenceServerException as err:
            _end(span, err)
            _fail(batch, f"{self.model} at {self.url} failed a batch of {len(batch)}: {err}")
            return
        except asyncio.CancelledError as err:  # the client is closing: its callers are answered by close()
            _end(span, err)
            raise
        except Exception as err:  # anything else still answers every caller now, not at its deadline
            _end(span, err)
            _fail(batch, f"{self.model} at {self.url}: a batch of {len(batch)} failed with {err!r}")
            return
        _end(span, None)
        if raw is None or raw.size != len(batch):
            got = "no " + OUTPUT if raw is None else f"{raw.size} answers"
            _fail(batch, f"{self.model} at {self.url} sent {got} for {len(batch)} queries")
            return
        for call, answer in zip(batch, raw.reshape(-1), strict=True):
            if not call.future.done():
                _resolve(call, answer, self.model)

    def _trace(self, batch: list[_Call]) -> tuple[Span | None, dict[str, str] | None]:
        """The gRPC client span of a request that carries a sampled caller's query, and the metadata that carries
        it to Triton. Its parent is the first sampled caller's span; the other sampled callers get a link each.

        A request with no sampled caller carries no context at all: Triton traces every request that carries
        one, whatever its sampled flag, so only sampled traces may reach it (and its spans join that trace)."""
        callers = [c.caller for c in batch if c.caller is not None]
        if not callers:
            return None, None
        host, _, port = self.url.rpartition(":")
        span = trace.get_tracer(TRACER_NAME).start_span(
            f"{_RPC_SERVICE}/{_RPC_METHOD}",
            context=trace.set_span_in_context(NonRecordingSpan(callers[0])),
            kind=SpanKind.CLIENT,
            links=[Link(other) for other in callers[1:]],
            attributes={
                "rpc.system": "grpc",
                "rpc.service": _RPC_SERVICE,
                "rpc.method": _RPC_METHOD,
                "server.address": host,
                "server.port": int(port) if port.isdigit() else 0,
                "qu.model": self.model,
                "qu.batch.queries": len(batch),
            },
        )
        metadata: dict[str, str] = {}
        propagate.inject(metadata, context=trace.set_span_in_context(span))
        return span, metadata

    async def ready(self) -> bool:
        """True when Triton answers and the model is loaded; never raises, never waits past the deadline."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(await self._client().is_model_ready(self.model, client_timeout=self.deadline_s))
        except (InferenceServerException, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        """Fail calls still waiting (StudentUnavailable), cancel requests in flight, close the channel."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        closed = f"the student client for {self.model} at {self.url} was closed"
        pending, self._pending = self._pending, []
        _fail(pending, closed)
        in_flight = dict(self._in_flight)
        for task, batch in in_flight.items():
            task.cancel()
            _fail(batch, closed)
        await asyncio.gather(*in_flight, return_exceptions=True)
        if self._triton is not None:
            await self._triton.close()
            self._triton = None


def _resolve(call: _Call, answer: Any, model: str) -> None:
    """One caller's answer; a malformed one fails only that caller, the rest of its batch is read on."""
    try:
        data = orjson.loads(answer)
        if not isinstance(data, dict):
            raise TypeError(f"the JSON is {type(data).__name__}, not an object")
        understanding = Understanding.from_json(data)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        call.future.set_exception(
            MalformedAnswer(f"{model} answered {call.query!r} with TAGS_JSON that is not an Understanding: {err}")
        )
        return
    call.future.set_result(understanding)


def _end(span: Span | None, error: BaseException | None) -> None:
    if span is None:
        return
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:300]))
    span.end()


def _fail(calls: list[_Call], message: str) -> None:
    # One exception object per caller: a shared one would collect every caller's traceback.
    for call in calls:
        if not call.future.done():
            call.future.set_exception(StudentUnavailable(message))
