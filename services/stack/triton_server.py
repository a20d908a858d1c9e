"""The Triton Inference Server shipped in the ``nvidia-pytriton`` wheel, run as a child process.

The wheel's server needs three things to run a Python-backend model here (NOTES.md, "Triton"):
the stub for this Python copied next to the backend (it finds its libraries by relative path),
``LD_LIBRARY_PATH`` = this Python's LIBDIR (else the stub loads the system libpython against our
stdlib) and this venv's ``bin`` first on ``PATH`` (the stub runs the first ``python3`` it finds).

Models load in *explicit* mode with ``--load-model=*``: every model in the repository loads at
start, and a new version appears only when :meth:`TritonServer.load_model` asks for it. Poll mode
would also find a new version without a restart, but it may load a version directory that is still
being copied; with explicit mode the caller knows when the new version is live or why it failed,
and a failed reload keeps the old version serving.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from services.errors import QuError
from services.stack.ports import port_in_use, terminate

SHM_DIR = Path("/dev/shm")
SHM_PREFIX_STEM = "qu_triton_"
LOG_TAIL_LINES = 15
# Triton logs one line per model that fails: E... model_lifecycle.cc:642] "failed to load 'NAME' version N: WHY"
_LOAD_FAILURE = re.compile(r'\] "(failed to load \'[^\']+\' version .*)"$')


class TritonServerError(QuError):
    pass


def pytriton_server_dir() -> Path:
    """``pytriton/tritonserver`` inside the installed wheel (found without importing pytriton, which is slow)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def prepare_python_backend(server_dir: Path) -> Path:
    """Put this Python's backend stub beside the Python backend (once; safe when two processes race)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server_dir / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton ships no Python backend stub for Python {version} ({stub})")
    target = server_dir / "backends" / "python" / "triton_python_backend_stub"
    if target.is_file() and target.stat().st_size == stub.stat().st_size:
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copy2(stub, staging)
    staging.chmod(0o755)
    os.replace(staging, target)  # atomic: a server starting meanwhile sees no stub or a whole one
    return target


def remove_shared_memory(prefix: str) -> list[Path]:
    """Remove the Python-backend regions named with ``prefix`` (a server's :attr:`TritonServer.shm_prefix`).

    Only a stopped server's regions may go; stubs that crashed leave theirs behind, which is why
    every server gets its own prefix. Returns the paths removed.
    """
    if not prefix.startswith(SHM_PREFIX_STEM):
        raise ValueError(f"{prefix!r} is not a prefix this engine gave a Triton server; refusing to remove shm files")
    removed = []
    for region in SHM_DIR.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
        removed.append(region)
    return removed


def server_environment() -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    # Not resolved: the venv's bin/python is a symlink, and the stub must see the venv, not its base Python.
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (python_bin, env.get("PATH", "")) if p)
    # One intra-op thread for the CPU models (torch, onnxruntime) unless the caller says otherwise: on a small
    # machine their spinning thread pools fight the broker and the worker for the cores (docs/BENCHMARKS.md).
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def line_buffered_stdout() -> list[str]:
    """``stdbuf -oL`` where coreutils has it: the prefix that makes the server's stdout line-buffered.

    Triton logs to stderr, but the OpenTelemetry SDK inside it (opentelemetry-cpp 1.13) writes its own errors
    ("[OTLP HTTP Client] ... Export ... failed", "BatchSpanProcessor queue is full - dropping span") with
    ``std::cout``; into a file that is block-buffered, so they stayed in the process for as long as it ran and
    triton.log said nothing while Triton's spans went missing. The SDK reads no variable for its log level
    (OTEL_LOG_LEVEL is not honoured by this build); line buffering is what makes its errors visible. stdbuf
    execs the server, so the PID and process group are the server's own.
    """
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, "-oL"] if stdbuf else []


@dataclass
class TritonServer:
    """One ``tritonserver`` on 127.0.0.1 serving ``model_repository``; output to ``log_file``, cwd ``workdir``."""

    model_repository: Path
    http_port: int
    grpc_port: int
    log_file: Path
    workdir: Path
    # Triton's own Prometheus metrics (nv_inference_queue_duration_us, ...) on 127.0.0.1:metrics_port; None: off.
    metrics_port: int | None = None
    # Where Triton posts its own spans (OTLP/HTTP, JSON) for requests that carry a trace context; None: off.
    trace_url: str | None = None
    # The address every endpoint binds: loopback for the embedded stack; 0.0.0.0 in a pod (`qu triton serve`).
    host: str = "127.0.0.1"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    # Python-backend shared memory is named after this prefix, so stop() removes exactly ours.
    _shm_prefix: str = field(default_factory=lambda: f"{SHM_PREFIX_STEM}{uuid.uuid4().hex[:12]}_", init=False)
    _log_start: int = field(default=0, init=False, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def shm_prefix(self) -> str:
        """The name prefix of this server's shared-memory regions in /dev/shm (see :func:`remove_shared_memory`)."""
        return self._shm_prefix

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self, server_dir: Path) -> list[str]:
        """The ``tritonserver`` command line for this server (``server_dir``: :func:`pytriton_server_dir`)."""
        return [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository.resolve()}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            *self._metrics_flags(),
            *self._trace_flags(),
            "--exit-timeout-secs=5",
            "--model-control-mode=explicit",
            "--load-model=*",
            # Our configs are complete; auto-complete would start an extra stub per model at load.
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name={self._shm_prefix}",
        ]

    def _metrics_flags(self) -> list[str]:
        if self.metrics_port is None:
            return ["--allow-metrics=false"]
        # No GPU here: GPU metrics would only log NVML and DCGM errors at start.
        return [
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
        ]

    def _trace_flags(self) -> list[str]:
        if self.trace_url is None:
            return []
        return [
            "--trace-config=mode=opentelemetry",
            f"--trace-config=opentelemetry,url={self.trace_url}",
            "--trace-config=opentelemetry,resource=service.name=qu-triton",
            # Spans reach the store within half a second (the exporter's default waits 5 s).
            "--trace-config=opentelemetry,bsp_schedule_delay=500",
            # A request carrying a context is traced whatever the rate (the client sends one only for sampled
            # traces); the rate is for requests without one, which should start no trace of their own.
            "--trace-config=rate=1000000",
            # TIMESTAMPS: the request, the model (queue) and compute spans; TENSORS would copy every query.
            "--trace-config=level=TIMESTAMPS",
        ]

    def start(self, *, timeout: float = 120.0) -> None:
        """Start the server and wait until every model is loaded (``/v2/health/ready``)."""
        if self._process is not None and self._process.poll() is None:
            raise TritonServerError(f"this Triton server is already running (pid {self._process.pid})")
        for port, setting in ((self.http_port, "QU_TRITON_HTTP_PORT"), (self.grpc_port, "QU_TRITON_GRPC_PORT")):
            if port_in_use(port):
                raise TritonServerError(f"port {port} is already in use: choose another Triton port ({setting})")
        if not self.model_repository.is_dir():
            raise TritonServerError(f"no model repository at {self.model_repository}")
        server_dir = pytriton_server_dir()
        prepare_python_backend(server_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [*line_buffered_stdout(), *self.command(server_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=server_environment(),
                start_new_session=True,  # its own process group: stop() can reach the backend stubs too
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                failures = "\n".join(self.load_failures()) or "(no model load failure logged)"
                raise TritonServerError(
                    f"tritonserver exited with code {code} while loading {self.model_repository} (a model that "
                    f"fails to load stops the server):\n{failures}\n{self.log_file} ends with:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        self.stop()
        raise TritonServerError(
            f"tritonserver was not ready on {self.http_url} within {timeout:.0f} s; "
            f"{self.log_file} ends with:\n{self.log_tail()}"
        )

    def ready(self, *, timeout: float = 1.0) -> bool:
        """True when the server answers and every model it was asked to load is ready."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def load_model(self, name: str, *, timeout: float = 120.0) -> None:
        """(Re)load model ``name`` from the repository: its newest version replaces the one serving.

        If the load fails, Triton keeps the version that was serving; the error says why.
        """
        request = urllib.request.Request(f"http://{self.http_url}/v2/repository/models/{name}/load", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return
        except urllib.error.HTTPError as err:
            body = err.read().decode("utf-8", "replace")
            raise TritonServerError(f"Triton could not load model {name!r}: {body}; see {self.log_file}") from err
        except (urllib.error.URLError, OSError) as err:
            raise TritonServerError(f"Triton on {self.http_url} did not answer a load of {name!r}: {err}") from err

    def stop(self, *, timeout: float = 15.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout=timeout)  # Triton unloads its models and ends the stubs (--exit-timeout-secs=5)
            # Stubs of a server that crashed or was killed may outlive it: end the rest of its group.
            # The group id is the server's pid, which the kernel does not reuse while any member lives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        remove_shared_memory(self._shm_prefix)

    def _log_lines(self) -> list[str]:
        """What this server wrote (not earlier runs appending to the same file), without its option tables."""
        try:
            with self.log_file.open("rb") as handle:
                handle.seek(self._log_start)
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if not line.startswith(("|", "+")) and not line.endswith("] ")]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of this server's log, its start-up tables left out."""
        return "\n".join(self._log_lines()[-lines:]) or "(nothing logged)"

    def load_failures(self) -> list[str]:
        """Why each model failed to load, from this server's log (Python tracebacks cut off)."""
        failures = []
        for line in self._log_lines():
            match = _LOAD_FAILURE.search(line)
            if match:
                failures.append(match.group(1).split("\\n\\nAt:")[0])
        return failures
