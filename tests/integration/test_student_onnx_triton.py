"""The exported student on a real Triton: a running server loads the new version without a restart, and
``QUERY`` -> ``TAGS_JSON`` answers carry the export's version string; ``qu student bench`` measures it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from services.student.bench import ask, bench_student
from services.student.export.publish import STUDENT_MODEL, install_version, load_model
from tests.fixtures.triton import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def infer(grpc_url: str, queries: list[bytes]) -> list[dict[str, Any]]:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        tensor = grpcclient.InferInput("QUERY", [len(queries), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[q] for q in queries], dtype=np.object_))
        result = client.infer(STUDENT_MODEL, [tensor], outputs=[grpcclient.InferRequestedOutput("TAGS_JSON")])
        answers = result.as_numpy("TAGS_JSON")
    assert answers is not None and answers.shape == (len(queries), 1)
    return [orjson.loads(a) for a in answers.reshape(-1)]


def test_the_exported_version_loads_into_a_running_triton_and_answers(
    triton_server_factory: ServerFactory, student_export: dict[str, Any]
) -> None:
    server = triton_server_factory(private_repository=True)
    server.start()
    before = infer(server.grpc_url, [b"organic milk"])[0]
    assert not before["version"].startswith("student-minilm-lora")  # version 1: the lexicon tagger

    install_version(Path(student_export["version_dir"]), server.model_repository / STUDENT_MODEL, 2)
    load_model(server.http_url)  # explicit model control: the running server swaps versions, no restart

    version = student_export["version"]
    answers = infer(server.grpc_url, [b"happy farms organic milk", b"acme gluten free pasta", b"cheap bananas"])
    assert [a["version"] for a in answers] == [version] * 3
    assert [(t["role"], t["text"]) for t in answers[0]["tags"]] == [
        ("brand", "happy farms"), ("attribute", "organic"), ("product", "milk"),
    ]  # fmt: skip
    assert all(len(a["categories"]) == 3 and a["rewrites"] == [] for a in answers)
    assert [t["start"] for t in answers[1]["tags"]] == [0, 5, 17]

    with pytest.raises(InferenceServerException, match="not normalized"):
        infer(server.grpc_url, [b"Acme Milk"])
    assert ask(server.grpc_url, STUDENT_MODEL, ["milk"])[0].version == version  # still serving after a bad request

    result = bench_student(
        server.grpc_url, STUDENT_MODEL, ["acme milk", "organic bananas", "blue hill pasta"], requests=40, concurrency=4
    )
    assert result["versions"] == {version: 80}
    assert 0 < result["batch1_p50_ms"] <= result["batch1_p99_ms"]
    assert result["concurrent_queries_per_s"] > 0
