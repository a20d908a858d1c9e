"""``qu triton serve``: what the Triton container runs (deploy/k8s/base/triton.yaml), as a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.embeddings import SentenceEmbedder
from services.stack.ports import free_port
from services.stack.triton_server import remove_shared_memory

pytestmark = pytest.mark.integration


def _env(state: Path, catalog: Path, embedder: SentenceEmbedder, **ports: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QU_", "OTEL_"))}
    env.update(
        QU_STATE_DIR=str(state),
        QU_CATALOG_DIR=str(catalog),
        QU_EMBEDDING_MODEL_PATH=str(embedder.model_path),
        QU_TRITON_TRACING="false",
        **{f"QU_TRITON_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    )
    return env


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except OSError:
        return 0, b""


def test_print_command_names_the_pods_ports_and_address(
    tmp_path: Path, student_catalog_dir: Path, student_model_repository: Path, embedder: SentenceEmbedder
) -> None:
    state = tmp_path / "state"
    shutil.copytree(student_model_repository.parent / "models", state / "models")  # the exported MiniLM graph
    env = {
        **_env(state, student_catalog_dir, embedder, http=8000, grpc=8001, metrics=8002),
        "QU_TRITON_TRACING": "true",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces",
    }
    repository = tmp_path / "models" / "repository"
    result = CliRunner().invoke(
        app, ["triton", "serve", "--model-repository", str(repository), "--host", "0.0.0.0", "--print-command"], env=env
    )
    assert result.exit_code == 0, result.output
    command = orjson.loads(result.stdout)["command"]
    assert command[0].endswith("/bin/tritonserver")
    for flag in ("--http-address=0.0.0.0", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert flag in command
    assert f"--model-repository={repository.resolve()}" in command
    assert "--trace-config=opentelemetry,url=http://collector:4318/v1/traces" in command
    assert (repository / "qu_student" / "config.pbtxt").is_file()


def test_serve_becomes_tritonserver_answers_the_student_and_stops_cleanly_on_sigterm(
    tmp_path: Path, student_catalog_dir: Path, student_model_repository: Path, embedder: SentenceEmbedder
) -> None:
    state = tmp_path / "state"
    shutil.copytree(student_model_repository.parent / "models", state / "models")
    http, grpc, metrics = free_port(), free_port(), free_port()
    env = _env(state, student_catalog_dir, embedder, http=http, grpc=grpc, metrics=metrics)
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "services.cli.main", "triton", "serve"]
    command += ["--model-repository", str(tmp_path / "models" / "repository")]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    shm_prefix = None
    try:
        deadline = time.monotonic() + 240
        while _get(f"http://127.0.0.1:{http}/v2/models/qu_student/ready")[0] != 200:
            assert process.poll() is None, f"qu triton serve exited {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"qu_student not ready within 240 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        # The command became the server (exec): the kubelet's SIGTERM goes to Triton itself.
        assert Path(f"/proc/{process.pid}/exe").resolve().name == "tritonserver"
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        shm_prefix = next(a.rsplit("=", 1)[1] for a in argv if "shm-region-prefix-name=" in a)
        body = {
            "inputs": [{"name": "QUERY", "shape": [1, 1], "datatype": "BYTES", "data": ["oat milk"]}],
            "outputs": [{"name": "TAGS_JSON"}],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{http}/v2/models/qu_student/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(json.loads(response.read())["outputs"][0]["data"][0])
        assert any(tag["text"] == "oat milk" or tag["role"] == "product" for tag in answer["tags"])
        status, text = _get(f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and b'nv_inference_request_success{model="qu_student"' in text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        if shm_prefix:
            remove_shared_memory(shm_prefix)
