"""The local LLM teacher as a child process: llama-cpp-python's OpenAI-compatible server on loopback.

`qu up` starts it when ``QU_TEACHER_LOCAL_MODEL`` names a model (a GGUF file, or ``smollm2-135m``, the
small model `make llm` installs); ``qu teacher run --backend openai`` beside the stack then talks to it.
It runs under its own interpreter (``QU_TEACHER_LOCAL_PYTHON``, by default the ``.venv-llm`` that
`make llm` builds beside the engine's ``.venv``): llama-cpp-python brings its own web stack and a
compiled llama.cpp, kept out of the engine's dependencies. The launcher it runs
(services/stack/llama_launcher.py) handles what the stock server cannot (the AMX crash, built-in names).

Ready means the server answers ``GET /v1/models`` with the model loaded, not that a port is open.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.errors import QuError
from services.stack.ports import port_in_use, terminate

LAUNCHER = Path(__file__).with_name("llama_launcher.py")
MAKE_HINT = "run `make llm` (builds .venv-llm with llama-cpp-python[server] and the small model)"


class LocalLLMError(QuError):
    pass


def default_llm_python() -> Path:
    """``.venv-llm/bin/python`` beside the virtualenv the engine runs from (`make llm` builds it there)."""
    return Path(sys.prefix).parent / ".venv-llm" / "bin" / "python"


@dataclass
class LocalLLMServer:
    """One llama-cpp-python server on 127.0.0.1:``port`` serving ``model``, logging to ``log_file``."""

    model: str  # a .gguf path or a built-in name (llama_launcher.BUILTIN_MODELS)
    port: int
    log_file: Path
    python: Path | None = None  # None: default_llm_python()
    n_ctx: int = 4096
    threads: int = 0
    extra_buffers: str = "auto"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def interpreter(self) -> Path:
        return self.python or default_llm_python()

    def command(self) -> list[str]:
        return [
            str(self.interpreter),
            str(LAUNCHER),
            "--model",
            self.model,
            "--port",
            str(self.port),
            "--n-ctx",
            str(self.n_ctx),
            "--threads",
            str(self.threads),
            "--extra-buffers",
            self.extra_buffers,
        ]

    def start(self, *, timeout: float = 180.0) -> None:
        if not self.interpreter.is_file():
            raise LocalLLMError(
                f"no Python for the local LLM at {self.interpreter}: {MAKE_HINT}, or set QU_TEACHER_LOCAL_PYTHON "
                "to an interpreter that has llama-cpp-python[server]"
            )
        if port_in_use(self.port):
            raise LocalLLMError(
                f"port {self.port} for the local LLM is already in use: set QU_TEACHER_LOCAL_PORT to another port"
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise LocalLLMError(
                    f"the local LLM server exited with code {code} while loading {self.model}; see {self.log_file}:\n"
                    + _tail(self.log_file)
                )
            time.sleep(0.25)
        self.stop()
        raise LocalLLMError(
            f"the local LLM server did not answer {self.base_url}/models within {timeout:.0f} s; see {self.log_file}"
        )

    def answers(self) -> bool:
        """True when the server lists its model (it loads the model before it listens)."""
        return models_listed(self.base_url)

    def stop(self, *, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        terminate(process, timeout=timeout)


def models_listed(base_url: str, *, timeout: float = 1.0) -> bool:
    try:
        reply = httpx.get(f"{base_url}/models", timeout=timeout)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200 and bool(reply.json().get("data"))


def served_model(base_url: str, *, timeout: float = 2.0) -> str:
    """The name the server answers to (its first listed model): what the curriculum records as the teacher."""
    reply = httpx.get(f"{base_url}/models", timeout=timeout)
    reply.raise_for_status()
    return str(reply.json()["data"][0]["id"])


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
