"""qu_student_trtllm_postprocess: the engine's tokens -> Understanding JSON per query (``TAGS_JSON``).

Beam 0 of each row is detokenized and parsed by ``services.student.generative.parse.parse_generation``, which
validates every item, finds span offsets in the query and returns an empty understanding (with the version) for
a generation that is not one JSON object. So a bad generation is an empty answer, never a failed request.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import triton_python_backend_utils as pb_utils  # provided by the Python backend stub at run time

from services.student.generative.batching import decode_query, first_beam_tokens
from services.student.generative.parse import parse_generation
from services.student.generative.prompt import PROMPT_VERSION


def _parameter(parameters: dict[str, Any], name: str) -> str:
    value = str(parameters.get(name, {}).get("string_value", "")).strip()
    if not value or value.startswith("${"):
        raise ValueError(
            f"qu_student_trtllm_postprocess: parameter {name!r} is not set: run deploy/gpu/fill_templates.py"
        )
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from transformers import AutoTokenizer  # only in the GPU image; never imported by the CPU stack

        parameters: dict[str, Any] = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = AutoTokenizer.from_pretrained(_parameter(parameters, "tokenizer_dir"))
        self.version = f"{_parameter(parameters, 'student_version')}+{PROMPT_VERSION}"
        pb_utils.Logger.log_info(f"qu_student_trtllm_postprocess: answers as {self.version}")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            elements = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            try:
                queries = [decode_query(i, raw) for i, raw in enumerate(elements)]
            except ValueError as err:  # preprocess refused it already; kept so this model stands on its own
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            tokens = pb_utils.get_input_tensor_by_name(request, "TOKENS_BATCH").as_numpy()
            lengths = pb_utils.get_input_tensor_by_name(request, "SEQUENCE_LENGTH").as_numpy()
            try:
                rows = first_beam_tokens(tokens, lengths)
                if len(rows) != len(queries):
                    raise ValueError(f"{len(rows)} generations for {len(queries)} queries")
                texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
            except ValueError as err:
                # The engine's answer is unusable as a whole: every query gets the empty answer, and the log says why.
                pb_utils.Logger.log_error(f"qu_student_trtllm_postprocess: {err}; answering empty")
                texts = [""] * len(queries)
            answers = []
            for query, text in zip(queries, texts, strict=True):
                parsed = parse_generation(text, query, self.version)
                if not parsed.valid:
                    pb_utils.Logger.log_warn(f"{query!r}: {'; '.join(parsed.problems)}")
                elif parsed.problems:
                    pb_utils.Logger.log_verbose(f"{query!r}: {'; '.join(parsed.problems)}")
                answers.append(orjson.dumps(parsed.understanding.to_json()))
            tensor = np.array(answers, dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TAGS_JSON", tensor)]))
        return responses
