"""The student served by Triton, asked for one pinned model version, for evaluation.

The real-time client (:mod:`services.student.client`) always asks the version Triton serves by
default and batches for latency under a deadline; an evaluation wants the opposite: a named
version (``qu eval srl --model 3``), whole batches, no deadline, and a hard error instead of a
fallback answer. Same contract: ``QUERY`` [n, 1] normalized UTF-8 -> ``TAGS_JSON`` [n, 1]
``Understanding.to_json()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import orjson

from services.domain import Understanding
from services.evaluation.predictors import PredictionError

if TYPE_CHECKING:
    from tritonclient.grpc.aio import InferenceServerClient

INPUT = "QUERY"
OUTPUT = "TAGS_JSON"
MAX_BATCH = 64  # triton_models/qu_student/config.pbtxt max_batch_size
_TIMEOUT_S = 120.0


class TritonStudentAnswer:
    """``await answer(normalized_queries)``: the pinned model version's answers, one per query."""

    def __init__(self, url: str, model: str, version: str = "") -> None:
        self.url = url
        self.model = model
        self.version = version  # "" = whichever version Triton serves by default
        self._client: InferenceServerClient | None = None
        self._checked = False

    @property
    def label(self) -> str:
        return f"{self.model}" + (f" version {self.version}" if self.version else "") + f" at {self.url}"

    def _triton(self) -> InferenceServerClient:
        if self._client is None:
            from tritonclient.grpc.aio import InferenceServerClient

            self._client = InferenceServerClient(self.url)
        return self._client

    async def _check_ready(self) -> None:
        from tritonclient.utils import InferenceServerException

        try:
            ready = await self._triton().is_model_ready(self.model, self.version, client_timeout=10.0)
        except (InferenceServerException, OSError, TimeoutError) as err:
            raise PredictionError(
                f"Triton at {self.url} did not answer ({err}): start the stack (`qu up`) or set QU_TRITON_GRPC_URL"
            ) from None
        if not ready:
            raise PredictionError(f"{self.label} is not loaded (check the model repository and its version policy)")
        self._checked = True

    async def __call__(self, normalized: list[str]) -> list[Understanding]:
        from tritonclient.grpc import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException

        if not self._checked:
            await self._check_ready()
        out: list[Understanding] = []
        for first in range(0, len(normalized), MAX_BATCH):
            batch = normalized[first : first + MAX_BATCH]
            query = InferInput(INPUT, [len(batch), 1], "BYTES")
            query.set_data_from_numpy(np.array([[q.encode()] for q in batch], dtype=np.object_))
            try:
                result = await self._triton().infer(
                    self.model,
                    [query],
                    model_version=self.version,
                    outputs=[InferRequestedOutput(OUTPUT)],
                    client_timeout=_TIMEOUT_S,
                )
            except InferenceServerException as err:
                raise PredictionError(f"{self.label} failed a batch of {len(batch)}: {err}") from None
            raw = result.as_numpy(OUTPUT)
            if raw is None or raw.size != len(batch):
                raise PredictionError(f"{self.label} sent {0 if raw is None else raw.size} answers for {len(batch)}")
            for query_text, answer in zip(batch, raw.reshape(-1), strict=True):
                try:
                    out.append(Understanding.from_json(orjson.loads(answer)))
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise PredictionError(f"{self.label} answered {query_text!r} with unreadable JSON: {err}") from None
        return out

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
