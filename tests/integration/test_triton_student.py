"""qu_student on a real Triton (the pytriton-bundled server), and the StudentClient that calls it.

What is pinned: the TAGS_JSON contract on a batch (tags, categories, version); a bad element
fails only its own request; concurrent ``understand`` calls travel as fewer requests than calls
(counted by Triton itself); deadlines and outages fail fast with StudentUnavailable; the same
client works again after Triton restarts; a new model version loads without a restart; the
server's own errors (port taken, model that cannot load) say what failed.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from services.annotation.handler import AnnotateHandler, InputRecord
from services.catalog.artifacts import build_catalog, load_catalog
from services.catalog.model import Product
from services.domain import Role, Source, Tag, Understanding
from services.errors import ServiceUnavailable
from services.guardrails import Guardrails
from services.normalize import normalize_query
from services.stack.model_repository import (
    ModelRepositoryError,
    committed_model_repository,
    materialize_model_repository,
)
from services.stack.ports import free_port
from services.stack.triton_server import SHM_DIR, TritonServer, TritonServerError
from services.student import InvalidStudentQuery, StudentClient, StudentUnavailable
from services.wire import RecordOrigin
from tests.fixtures.triton import ServerFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MODEL = "qu_student"


def client_for(server: TritonServer, **overrides: Any) -> StudentClient:
    options: dict[str, Any] = {"deadline_ms": 2000.0, "batch_window_ms": 5.0, "max_batch": 64, **overrides}
    return StudentClient(server.grpc_url, MODEL, **options)


def infer(server: TritonServer, queries: list[bytes]) -> list[dict[str, Any]]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        query = grpcclient.InferInput("QUERY", [len(queries), 1], "BYTES")
        query.set_data_from_numpy(np.array([[q] for q in queries], dtype=np.object_))
        result = client.infer(MODEL, [query], outputs=[grpcclient.InferRequestedOutput("TAGS_JSON")])
        answers = result.as_numpy("TAGS_JSON")
    assert answers is not None and answers.shape == (len(queries), 1)
    return [orjson.loads(a) for a in answers.reshape(-1)]


def request_counts(server: TritonServer) -> tuple[int, int]:
    """(successful requests, queries answered) as Triton counts them for qu_student, all versions."""
    with httpclient.InferenceServerClient(server.http_url) as client:
        stats = client.get_inference_statistics(MODEL)["model_stats"]
    return (
        sum(int(s["inference_stats"]["success"]["count"]) for s in stats),
        sum(int(s["inference_count"]) for s in stats),
    )


def counts_reaching(server: TritonServer, before: tuple[int, int], answered: int) -> tuple[int, int]:
    """Triton's counts once they show ``answered`` more queries: it updates them after replying,
    so a loaded machine can read them a moment late (bounded: 10 s)."""
    deadline = time.monotonic() + 10
    counts = request_counts(server)
    while counts[1] - before[1] < answered and time.monotonic() < deadline:
        time.sleep(0.05)
        counts = request_counts(server)
    return counts


def tags_of(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(t["role"], t["text"], t["canonical"]) for t in answer["tags"]]


# --- the model's contract ----------------------------------------------------------------------


def test_a_batch_gets_one_understanding_per_query(triton_server: TritonServer, student_catalog_dir: Path) -> None:
    queries = ["organic bananas", "2% reduced fat ultra pasteurized chocolate milk", "bread no gluten", "oreo"]
    answers = infer(triton_server, [q.encode() for q in queries])
    build = load_catalog(student_catalog_dir).manifest["build"]

    assert tags_of(answers[0]) == [("attribute", "organic", "organic"), ("product", "bananas", "banana")]
    assert tags_of(answers[1])[-2:] == [("attribute", "chocolate", "chocolate"), ("product", "milk", "milk")]
    assert tags_of(answers[2]) == [("product", "bread", "bread"), ("attribute", "no gluten", "gluten free")]
    assert tags_of(answers[3]) == [("brand", "oreo", "Oreo")]
    # Cosine alone puts "snacks > fruit vegetable snacks" (0.528) a hair before "produce > fresh fruits" (0.520).
    assert ["produce", "fresh fruits"] in [c["path"] for c in answers[0]["categories"]]
    assert answers[1]["categories"][0]["path"][0] == "dairy eggs"  # "soy lactosefree" and "milk" are 0.01 apart
    assert ["dairy eggs", "milk"] in [c["path"] for c in answers[1]["categories"]]
    assert answers[2]["categories"][0]["path"] == ["bakery", "bread"]
    for query, answer in zip(queries, answers, strict=True):
        assert set(answer) == {"tags", "categories", "rewrites", "version"}
        assert answer["version"] == f"catalog-lexicon-v2+catalog.{build}+all-MiniLM-L6-v2"
        assert answer["rewrites"] == []
        assert len(answer["categories"]) == 3
        scores = [c["score"] for c in answer["categories"]]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= x <= 1.0 for x in scores)
        for tag in answer["tags"]:
            assert query[tag["start"] : tag["end"]] == tag["text"]
        assert Understanding.from_json(answer).to_json() == answer  # the domain type reads it back whole


def test_a_bad_element_fails_its_own_request_and_the_batch_goes_on(triton_server: TritonServer) -> None:
    from tritonclient.grpc.aio import InferenceServerClient

    async def send(client: InferenceServerClient, queries: list[bytes]) -> Any:
        query = grpcclient.InferInput("QUERY", [len(queries), 1], "BYTES")
        query.set_data_from_numpy(np.array([[q] for q in queries], dtype=np.object_))
        return await client.infer(MODEL, [query])

    async def main() -> list[Any]:
        async with InferenceServerClient(triton_server.grpc_url) as client:
            # Sent together so the dynamic batcher can put them into one execute() call.
            return await asyncio.gather(
                send(client, [b"milk", b"\xff\xfe milk"]),
                send(client, [b"milk"]),
                send(client, [b"Organic Bananas"]),
                send(client, [b"bananas", b""]),
                send(client, [b"organic bananas"]),
                return_exceptions=True,
            )

    bad_utf8, good, not_normalized, empty, good_too = asyncio.run(main())
    assert isinstance(bad_utf8, InferenceServerException)
    assert "QUERY[1] is not valid UTF-8" in bad_utf8.message()
    assert bad_utf8.status() == "StatusCode.INVALID_ARGUMENT"
    assert isinstance(not_normalized, InferenceServerException)
    assert "is not normalized" in not_normalized.message()
    assert isinstance(empty, InferenceServerException) and "QUERY[1] is empty" in empty.message()
    for result, query in ((good, "milk"), (good_too, "organic bananas")):
        assert not isinstance(result, Exception), result
        assert orjson.loads(result.as_numpy("TAGS_JSON")[0, 0])["tags"][-1]["text"] == query.split()[-1]


# --- the client ---------------------------------------------------------------------------------


def test_concurrent_calls_travel_as_fewer_requests(triton_server: TritonServer) -> None:
    distinct = [normalize_query(q) for q in ("organic bananas", "oreo", "bread no gluten", "greek yogurt")]
    expected = dict(zip(distinct, infer(triton_server, [q.encode() for q in distinct]), strict=True))
    queries = distinct * 16

    async def main() -> tuple[list[Understanding], StudentClient]:
        client = client_for(triton_server)
        try:
            return list(await asyncio.gather(*(client.understand(q) for q in queries))), client
        finally:
            await client.close()

    requests_before, answered_before = request_counts(triton_server)
    answers, client = asyncio.run(main())
    requests, answered = counts_reaching(triton_server, (requests_before, answered_before), 64)

    assert answered - answered_before == 64
    assert requests - requests_before == client.requests_sent < 64  # Triton counts what the client says it sent
    assert client.queries_sent == 64
    for query, answer in zip(queries, answers, strict=True):  # every caller got the answer to its own query
        assert answer.to_json() == expected[query]


def test_max_batch_splits_a_burst(triton_server: TritonServer) -> None:
    async def main() -> StudentClient:
        client = client_for(triton_server, max_batch=4, batch_window_ms=50.0)
        try:
            answers = await asyncio.gather(*(client.understand("milk") for _ in range(10)))
            assert all(a.tags[0].canonical == "milk" for a in answers)
        finally:
            await client.close()
        return client

    client = asyncio.run(main())
    assert (client.requests_sent, client.queries_sent) == (3, 10)


def test_the_client_refuses_queries_the_model_would_reject(triton_server: TritonServer) -> None:
    async def main() -> None:
        client = client_for(triton_server)
        try:
            for bad in ("", "Organic Bananas", " milk"):
                with pytest.raises(InvalidStudentQuery, match="not a normalized query"):
                    await client.understand(bad)
            assert await client.ready()
        finally:
            await client.close()

    asyncio.run(main())


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word: a hung server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def test_a_call_past_the_deadline_fails_at_the_deadline(triton_server: TritonServer, silent_port: int) -> None:
    async def main() -> tuple[float, float]:
        hung = StudentClient(f"127.0.0.1:{silent_port}", MODEL, deadline_ms=150, batch_window_ms=1, max_batch=8)
        tight = client_for(triton_server, deadline_ms=0.5)  # less than any real answer takes
        try:
            started = time.perf_counter()
            with pytest.raises(StudentUnavailable, match="within 150 ms"):
                await hung.understand("milk")
            hung_s = time.perf_counter() - started
            assert not await hung.ready()
            started = time.perf_counter()
            with pytest.raises(StudentUnavailable, match="did not answer"):
                await tight.understand("milk")
            return hung_s, time.perf_counter() - started
        finally:
            await hung.close()
            await tight.close()

    hung_s, tight_s = asyncio.run(main())
    assert issubclass(StudentUnavailable, ServiceUnavailable)  # what the annotate handler degrades on
    assert 0.14 <= hung_s < 0.5
    assert tight_s < 0.2


def test_calls_fail_fast_while_triton_is_down_and_work_again_after_a_restart(
    triton_server_factory: ServerFactory,
) -> None:
    first = triton_server_factory()
    first.start()
    second = triton_server_factory(http_port=first.http_port, grpc_port=first.grpc_port)
    shm_prefix = first.shm_prefix

    async def main() -> list[float]:
        client = client_for(first, deadline_ms=3000)
        try:
            assert (await client.understand("milk")).tags[0].canonical == "milk"
            first.stop()
            assert not list(SHM_DIR.glob(f"{shm_prefix}*"))  # its shared memory went with it
            down = []
            for _ in range(3):
                started = time.perf_counter()
                with pytest.raises(StudentUnavailable):
                    await client.understand("milk")
                down.append(time.perf_counter() - started)
            assert not await client.ready()
            await asyncio.to_thread(second.start)
            back = time.perf_counter()
            # The channel reconnects on its own, at most RECONNECT_BACKOFF_MS after the server is back.
            while not await client.ready():
                assert time.perf_counter() - back < 2.0, "the client did not see Triton come back"
                await asyncio.sleep(0.01)
            down.append(time.perf_counter() - back)
            assert (await client.understand("oreo")).tags[0].canonical == "Oreo"  # the same client, no re-creation
            return down
        finally:
            await client.close()

    *down, recovered = asyncio.run(main())
    assert max(down) < 1.0, down  # refused connections fail long before the 3 s deadline
    assert recovered < 1.0, recovered


def test_a_new_model_version_loads_without_a_restart(triton_server_factory: ServerFactory) -> None:
    server = triton_server_factory(private_repository=True)
    server.start()
    model_dir = server.model_repository / MODEL
    shutil.copytree(model_dir / "1", model_dir / "2")
    server.load_model(MODEL)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.get_model_metadata(MODEL).versions == ["2"]
        query = grpcclient.InferInput("QUERY", [1, 1], "BYTES")
        query.set_data_from_numpy(np.array([[b"milk"]], dtype=np.object_))
        assert client.infer(MODEL, [query]).get_response().model_version == "2"
    # A version that cannot load leaves the serving one in place, and the error says why.
    (model_dir / "3").mkdir()
    (model_dir / "3" / "model.py").write_text("raise RuntimeError('broken student v3')\n")
    with pytest.raises(TritonServerError, match=r"could not load model 'qu_student'.*broken student v3"):
        server.load_model(MODEL)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert client.infer(MODEL, [query]).get_response().model_version == "2"
        assert client.is_model_ready(MODEL)
    # Triton's strict readiness counts the failed version: /v2/health/ready is false while v2 serves.
    assert not server.ready()


# --- a student that answers valid JSON which is not an Understanding ---------------------------

# A real Python-backend model on a real Triton, answering per query: what a broken model version or a
# bug in a new student would send. Anything else gets a valid (empty) Understanding.
_MALFORMED_MODEL = """
import json

import numpy as np
import triton_python_backend_utils as pb_utils

ANSWERS = {"array": b"[1, 2]", "number": b"5", "text": b'"milk"', "null": b"null", "nested": b'{"tags": [[1]]}'}
VALID = json.dumps({"tags": [], "categories": [], "rewrites": [], "version": "malformed-test"}).encode()


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            queries = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy().reshape(-1)
            answers = [[ANSWERS.get(q.decode(), VALID)] for q in queries]
            tensor = pb_utils.Tensor("TAGS_JSON", np.array(answers, dtype=np.object_))
            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
        return responses
"""
MALFORMED = ["array", "number", "text", "null", "nested"]


@pytest.fixture(scope="module")
def malformed_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A Triton serving, as qu_student, a model whose answers are JSON but not objects (see _MALFORMED_MODEL)."""
    root = tmp_path_factory.mktemp("malformed-triton")
    model = root / "repository" / MODEL
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text((committed_model_repository() / MODEL / "config.pbtxt").read_text())
    (model / "1" / "model.py").write_text(_MALFORMED_MODEL)
    server = TritonServer(root / "repository", free_port(), free_port(), root / "triton.log", root / "work")
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


def unhandled_task_errors(loop: asyncio.AbstractEventLoop) -> list[dict[str, Any]]:
    """What the loop would log as "Task exception was never retrieved" (and any other unhandled error)."""
    seen: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    return seen


def test_an_answer_that_is_json_but_not_an_object_fails_its_caller_at_once(malformed_triton: TritonServer) -> None:
    queries = [*MALFORMED, "milk"]

    async def main() -> tuple[list[Any], float, list[dict[str, Any]], StudentClient]:
        unhandled = unhandled_task_errors(asyncio.get_running_loop())
        client = client_for(malformed_triton, deadline_ms=5000, batch_window_ms=20)
        try:
            started = time.perf_counter()
            results = await asyncio.gather(*(client.understand(q) for q in queries), return_exceptions=True)
            elapsed = time.perf_counter() - started
        finally:
            await client.close()
        gc.collect()  # a task's unretrieved exception is reported when the task is collected
        await asyncio.sleep(0)
        return results, elapsed, unhandled, client

    results, elapsed, unhandled, client = asyncio.run(main())
    assert client.requests_sent == 1  # one batch: a bad answer must not hold up the others in it
    assert elapsed < 1.0, f"the callers waited {elapsed:.2f} s for a 5 s deadline"
    assert unhandled == []
    *bad, good = results
    for query, result in zip(MALFORMED, bad, strict=True):
        assert isinstance(result, StudentUnavailable), (query, result)
        assert f"answered {query!r}" in str(result) and "not an Understanding" in str(result)
    assert isinstance(good, Understanding) and good.version == "malformed-test"


def test_a_bug_reading_a_batch_fails_its_callers_at_once(
    malformed_triton: TritonServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_reader(call: Any, answer: Any, model: str) -> None:
        raise RuntimeError("a bug in reading answers")

    monkeypatch.setattr("services.student.client._resolve", broken_reader)

    async def main() -> tuple[list[Any], float, list[dict[str, Any]]]:
        unhandled = unhandled_task_errors(asyncio.get_running_loop())
        client = client_for(malformed_triton, deadline_ms=5000, batch_window_ms=20)
        try:
            started = time.perf_counter()
            results = await asyncio.gather(*(client.understand(q) for q in ("milk", "eggs")), return_exceptions=True)
            elapsed = time.perf_counter() - started
        finally:
            await client.close()
        gc.collect()
        await asyncio.sleep(0)
        return results, elapsed, unhandled

    results, elapsed, unhandled = asyncio.run(main())
    assert elapsed < 1.0 and unhandled == []
    assert all(isinstance(r, StudentUnavailable) and "a bug in reading answers" in str(r) for r in results), results


class _NoHits:
    async def get_many(self, normalized_queries: Sequence[str]) -> list[None]:
        return [None] * len(normalized_queries)


class _MilkFallback:
    def tag(self, normalized: str) -> list[Tag]:
        return [Tag(Role.PRODUCT, 0, 4, "milk", "milk")] if normalized.startswith("milk") else []


def test_the_handler_answers_a_malformed_student_answer_as_fallback_at_once(malformed_triton: TritonServer) -> None:
    catalog = build_catalog([Product("1", "Whole Milk", "Horizon Organic", ("dairy eggs", "milk"))], embedder=None)
    events = [orjson.dumps({"event_id": f"e{i}", "query": q}) for i, q in enumerate([*MALFORMED, "milk"])]
    records = [InputRecord(v, None, None, RecordOrigin("qu.search-events.v1", 0, i)) for i, v in enumerate(events)]

    async def main() -> tuple[list[Any], float, list[dict[str, Any]]]:
        unhandled = unhandled_task_errors(asyncio.get_running_loop())
        client = client_for(malformed_triton, deadline_ms=5000, batch_window_ms=20)
        handler = AnnotateHandler(
            cache=_NoHits(), student=client, fallback=_MilkFallback(), guardrails=Guardrails(catalog),
            max_query_chars=512,
        )  # fmt: skip
        try:
            started = time.perf_counter()
            outcomes = await handler.handle_batch(records)
            elapsed = time.perf_counter() - started
        finally:
            await client.close()
        gc.collect()
        await asyncio.sleep(0)
        return outcomes, elapsed, unhandled

    outcomes, elapsed, unhandled = asyncio.run(main())
    assert elapsed < 1.0 and unhandled == []
    annotations = [o.annotation for o in outcomes]
    assert all(a is not None for a in annotations), [o.reason for o in outcomes]
    *bad, good = [a for a in annotations if a is not None]
    assert [(a.source, a.degraded) for a in bad] == [(Source.FALLBACK, True)] * len(MALFORMED)
    assert (good.source, good.model_version) == (Source.STUDENT, "malformed-test")


# --- the server's own errors -----------------------------------------------------------------


def test_a_port_in_use_is_named(triton_server: TritonServer, triton_server_factory: ServerFactory) -> None:
    with pytest.raises(TritonServerError, match=f"port {triton_server.grpc_port} is already in use.*GRPC_PORT"):
        triton_server_factory(grpc_port=triton_server.grpc_port).start()


def test_a_model_that_cannot_load_stops_the_server_with_its_log(tmp_path: Path, embedder: Any) -> None:
    empty_catalog = tmp_path / "no-catalog"
    empty_catalog.mkdir()
    repository = materialize_model_repository(
        committed_model_repository(), tmp_path / "repo", catalog_dir=empty_catalog,
        embedding_model_path=embedder.model_path,
    )  # fmt: skip
    server = TritonServer(repository, free_port(), free_port(), tmp_path / "triton.log", tmp_path / "work")
    with pytest.raises(TritonServerError, match=r"(?s)exited with code .*no imported catalog in"):
        server.start(timeout=60)
    assert server.pid is None
    assert not list(SHM_DIR.glob(f"{server.shm_prefix}*"))


def test_materialize_writes_the_paths_and_checks_its_input(tmp_path: Path, student_catalog_dir: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    dest = materialize_model_repository(
        committed_model_repository(), tmp_path / "repo", catalog_dir=student_catalog_dir, embedding_model_path=model
    )
    config = (dest / MODEL / "config.pbtxt").read_text()
    assert f'key: "catalog_dir" value: {{ string_value: "{student_catalog_dir.resolve()}" }}' in config
    assert (dest / MODEL / "1" / "model.py").is_file()
    assert not list(dest.rglob("__pycache__"))
    with pytest.raises(ModelRepositoryError, match="no model repository"):
        materialize_model_repository(
            tmp_path / "nope", dest, catalog_dir=student_catalog_dir, embedding_model_path=model
        )
    with pytest.raises(ModelRepositoryError, match=r"embedding_model_path .* does not exist"):
        materialize_model_repository(
            committed_model_repository(), dest, catalog_dir=student_catalog_dir, embedding_model_path=tmp_path / "x"
        )
