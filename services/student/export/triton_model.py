"""qu_student, an exported ONNX version: the distilled MiniLM student behind the student contract.

``qu student export`` copies this file as ``model.py`` into each new version directory of
``qu_student``, beside the graphs and ``student.json``; the work is done by
``services.student.onnx_student`` (importable, unit-tested without Triton). The contract is the
one every version keeps (config.pbtxt): ``QUERY`` [n, 1] normalized queries as UTF-8 bytes ->
``TAGS_JSON`` [n, 1], ``Understanding.to_json()`` whose ``version`` names the run and precision.

The config parameter ``catalog_dir`` (written by the stack when it materializes the repository)
points at the catalog whose category embeddings the query vectors are ranked against.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend stub at run time

from services.student.onnx_student import OnnxStudent, answer_batches


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        catalog_dir = str(config.get("parameters", {}).get("catalog_dir", {}).get("string_value", "")).strip()
        if not catalog_dir:
            raise ValueError("qu_student: config parameter catalog_dir is missing: materialize the model repository")
        self.student = OnnxStudent(Path(__file__).resolve().parent, Path(catalog_dir))
        pb_utils.Logger.log_info(f"qu_student {args.get('model_version', '?')}: {self.student.version}")

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [pb_utils.get_input_tensor_by_name(r, "QUERY").as_numpy().reshape(-1) for r in requests]
        try:
            answers = answer_batches(self.student, batches)
        except Exception as err:  # the whole batch failed: every request still gets its own response
            error = pb_utils.TritonError(f"qu_student could not answer: {err}", pb_utils.TritonError.INTERNAL)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for item in answers:
            if isinstance(item, ValueError):
                error = pb_utils.TritonError(str(item), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                tensor = pb_utils.Tensor("TAGS_JSON", np.array(item, dtype=np.object_).reshape(-1, 1))
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses

    def finalize(self) -> None:
        student = getattr(self, "student", None)
        if student is not None:
            student.close()
