"""qu_student_trtllm_preprocess: a batch of normalized queries -> prompt token ids for the TensorRT-LLM engine.

The prompt is ``services.student.generative.prompt.build_prompt`` (the query as a JSON data block inside the
Llama-3 chat format the student was fine-tuned on), tokenized by the merged model's own tokenizer. Outputs per
query: the padded ids and their length, the answer budget, the end/pad ids and top-k 1 (greedy decoding).

Runs in the Python backend stub of a Triton with the tensorrtllm backend; the project must be installed in the
python that stub runs (docs/gpu-student.md), so the same plain modules tested on CPU do the work here.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend stub at run time

from services.student.generative.batching import decode_query, pad_token_ids
from services.student.generative.prompt import END_OF_TURN, build_prompt


def _parameter(parameters: dict[str, Any], name: str) -> str:
    value = str(parameters.get(name, {}).get("string_value", "")).strip()
    if not value or value.startswith("${"):
        raise ValueError(
            f"qu_student_trtllm_preprocess: parameter {name!r} is not set: run deploy/gpu/fill_templates.py"
        )
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        from transformers import AutoTokenizer  # only in the GPU image; never imported by the CPU stack

        parameters: dict[str, Any] = json.loads(args["model_config"]).get("parameters", {})
        self.tokenizer = AutoTokenizer.from_pretrained(_parameter(parameters, "tokenizer_dir"))
        # Llama-3-Instruct ends a turn with <|eot_id|>, not with its eos <|end_of_text|>: stop there.
        end_id = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if not isinstance(end_id, int) or end_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {END_OF_TURN} token: is tokenizer_dir a Llama-3 Instruct model?")
        self.end_id = end_id
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if isinstance(pad_id, int) else end_id
        self.max_output_tokens = int(_parameter(parameters, "max_output_tokens"))
        self.max_input_tokens = int(_parameter(parameters, "max_input_tokens"))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            elements = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            try:
                prompts = [build_prompt(decode_query(i, raw)) for i, raw in enumerate(elements)]
                # The prompt already starts with <|begin_of_text|>; the tokenizer must not add another.
                rows = self.tokenizer(prompts, add_special_tokens=False)["input_ids"]
                for i, row in enumerate(rows):
                    if len(row) > self.max_input_tokens:
                        raise ValueError(
                            f"QUERY[{i}] makes a prompt of {len(row)} tokens, over the engine's {self.max_input_tokens}"
                        )
                ids, lengths = pad_token_ids(rows, self.pad_id)
            except ValueError as err:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            n = len(rows)
            outputs = {
                "INPUT_ID": ids,
                "REQUEST_INPUT_LEN": lengths,
                "REQUEST_OUTPUT_LEN": np.full((n, 1), self.max_output_tokens, dtype=np.int32),
                "END_ID": np.full((n, 1), self.end_id, dtype=np.int32),
                "PAD_ID": np.full((n, 1), self.pad_id, dtype=np.int32),
                "RUNTIME_TOP_K": np.ones((n, 1), dtype=np.int32),
            }
            responses.append(
                pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in outputs.items()])
            )
        return responses
