"""``qu up`` / ``qu status`` / ``qu down``: the whole engine on one machine, under one state directory.

Started in order — the tansu broker, its topics, Redis, Triton (serving the model repository
materialized with this machine's paths), the head-tag refresher, the local LLM teacher when
``QU_TEACHER_LOCAL_MODEL`` names one, and the Faust worker(s) —
each recorded in STATE_DIR/stack/state.json as soon as it runs, so ``qu down`` can stop
exactly what ``qu up`` started even when ``qu up`` failed half way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from pydantic import SecretStr

from services.annotation.runtime import HANDLER_READY
from services.catalog.artifacts import CatalogNotFoundError, resolve_build
from services.settings import Settings
from services.stack.figures import read_figures
from services.stack.keeper import KeeperStatus
from services.stack.llm_server import LocalLLMServer, served_model
from services.stack.ports import port_in_use
from services.stack.redis_server import RedisServer
from services.stack.student_repository import prepare_student_repository
from services.stack.supervisor import ProcessRecord, StackError, StackState
from services.stack.tansu import TansuBroker
from services.stack.topics import ensure_topics
from services.stack.triton_server import TritonServer, remove_shared_memory
from services.telemetry.span_store import READY as SPAN_STORE_READY

Report = Callable[[str], None]
# The trace store last: it receives the spans the others export while they stop.
STOP_ORDER = ("worker", "recorder", "llm", "refresher", "triton", "redis", "kafka", "traces")


class AlreadyRunning(StackError):
    def __init__(self, state: StackState) -> None:
        self.state = state
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in state.processes)
        super().__init__(f"the stack is already running: {names}")


@dataclass(frozen=True, slots=True)
class PortSetting:
    port: int
    setting: str
    what: str


class EmbeddedStack:
    def __init__(self, settings: Settings, report: Report = lambda _message: None) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.resolve()
        self.stack_dir = self.state_dir / "stack"
        self.logs = self.stack_dir / "logs"
        self.report = report
        self._log_offsets: dict[str, int] = {}

    # -- what is there ------------------------------------------------------------------------------

    def state(self) -> StackState | None:
        return StackState.load(self.state_dir)

    def status(self, *, figures: bool = False) -> dict[str, object]:
        """Endpoints and processes; with ``figures``, the workers' last minute and their lag as well
        (services/stack/figures.py: a scrape of each worker and a read of the broker)."""
        state = self.state()
        if state is None:
            return {"running": False, "endpoints": {}, "processes": []}
        processes: list[dict[str, object]] = []
        for p in state.processes:
            process: dict[str, object] = {"name": p.name, "pid": p.pid, "alive": p.alive, "log": p.log}
            kept = self.keeper_status(p.name) if p.name.startswith("worker-") else None
            if kept is not None:
                process.update(child_pid=kept.child_pid, restarts=kept.restarts, last_exits=kept.exits[-3:])
            processes.append(process)
        report: dict[str, object] = {
            "running": bool(processes) and all(p["alive"] for p in processes),
            "endpoints": state.endpoints,
            "processes": processes,
            "state_dir": str(self.state_dir),
        }
        if figures and any(p.name == "kafka" and p.alive for p in state.processes):
            workers = {
                key.removeprefix("metrics_"): url
                for key, url in self.endpoints().items()
                if key.startswith("metrics_worker-")
            }
            report["figures"] = read_figures(workers, state.endpoints.get("kafka", self.endpoints()["kafka"])).to_json()
        return report

    def keeper_status_path(self, name: str) -> Path:
        """Where the keeper of ``name`` (a worker) says how often it restarted it and which PID runs now."""
        return self.stack_dir / f"{name}.keeper.json"

    def keeper_status(self, name: str) -> KeeperStatus | None:
        return KeeperStatus.load(self.keeper_status_path(name))

    def endpoints(self) -> dict[str, str]:
        s = self.settings
        return {
            "kafka": f"127.0.0.1:{s.kafka_port}",
            "redis": s.embedded_redis_url,
            "triton_grpc": f"127.0.0.1:{s.triton_grpc_port}",
            "triton_http": f"127.0.0.1:{s.triton_http_port}",
            # Where an operator looks: each process's Prometheus endpoint and the trace store.
            **{f"metrics_{name}": f"http://127.0.0.1:{port}/metrics" for name, port in self.metrics_ports().items()},
            **(
                {"metrics_triton": f"http://127.0.0.1:{s.triton_metrics_port}/metrics"} if s.triton_metrics_port else {}
            ),
            **({"traces": self.span_store_url} if self.keeps_traces else {}),
            **({"teacher_llm": self.local_llm_url} if s.teacher_local_model else {}),
        }

    @property
    def local_llm_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.teacher_local_port}/v1"

    def _ports(self) -> list[PortSetting]:
        s = self.settings
        ports = [
            PortSetting(s.kafka_port, "QU_KAFKA_PORT", "the Kafka broker"),
            PortSetting(s.redis_port, "QU_REDIS_PORT", "Redis"),
            PortSetting(s.triton_http_port, "QU_TRITON_HTTP_PORT", "Triton HTTP"),
            PortSetting(s.triton_grpc_port, "QU_TRITON_GRPC_PORT", "Triton gRPC"),
        ]
        if s.triton_metrics_port:
            ports.append(PortSetting(s.triton_metrics_port, "QU_TRITON_METRICS_PORT", "Triton's metrics"))
        ports += [
            PortSetting(s.worker_web_port + i, "QU_WORKER_WEB_PORT", f"Faust worker {i}") for i in range(s.workers)
        ]
        if self.keeps_traces:
            ports.append(PortSetting(s.span_store_port, "QU_SPAN_STORE_PORT", "the trace store (OTLP/HTTP)"))
            ports.append(
                PortSetting(s.span_store_json_port, "QU_SPAN_STORE_JSON_PORT", "the trace store (OTLP/JSON, Triton's)")
            )
        if s.teacher_local_model:
            ports.append(PortSetting(s.teacher_local_port, "QU_TEACHER_LOCAL_PORT", "the local LLM teacher"))
        if s.metrics_port:
            ports += [
                PortSetting(port, "QU_METRICS_PORT", f"the Prometheus endpoint of {name}")
                for name, port in self.metrics_ports().items()
            ]
        return ports

    @property
    def keeps_traces(self) -> bool:
        """The stack runs its own trace store (for `qu trace`) unless spans are sent to a collector of yours."""
        return not (self.settings.otlp_endpoint or self.settings.otlp_traces_endpoint)

    @property
    def traces_dir(self) -> Path:
        return self.stack_dir / "traces"

    def metrics_ports(self) -> dict[str, int]:
        """Each child's Prometheus endpoint: the refresher on QU_METRICS_PORT, worker N on the port + 1 + N."""
        base = self.settings.metrics_port
        if not base:
            return {}
        return {"refresher": base, **{f"worker-{i}": base + 1 + i for i in range(self.settings.workers)}}

    def child_environment(self) -> dict[str, str]:
        """What every child process needs to find the others: the same settings, pointed at this stack."""
        endpoints = self.endpoints()
        env = dict(os.environ)
        # Every setting this stack was given travels to its children, then the stack's own endpoints.
        for name in self.settings.model_fields_set:
            value = _env_value(getattr(self.settings, name))
            if value is None:
                env.pop(f"QU_{name.upper()}", None)  # unset, as given: "None" would be read as a value
            else:
                env[f"QU_{name.upper()}"] = value
        # The OTLP endpoints are read under their standard names, not QU_'s.
        env.pop("QU_OTLP_ENDPOINT", None)
        env.pop("QU_OTLP_TRACES_ENDPOINT", None)
        if self.settings.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.settings.otlp_endpoint
        if self.settings.otlp_traces_endpoint:
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = self.settings.otlp_traces_endpoint
        elif self.keeps_traces:
            env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = self.span_store_url
        env.update(
            {
                "QU_STATE_DIR": str(self.state_dir),
                "QU_CATALOG_DIR": str(self.settings.resolved_catalog_dir.resolve()),
                "QU_KAFKA_BOOTSTRAP": endpoints["kafka"],
                "QU_REDIS_URL": endpoints["redis"],
                "QU_TRITON_GRPC_URL": endpoints["triton_grpc"],
                "QU_TRITON_HTTP_URL": endpoints["triton_http"],
                "QU_ANNOTATION_FORMAT": self.settings.annotation_format,
                # tansu speaks PLAINTEXT only: the cluster's TLS / SASL settings are not this broker's.
                "QU_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
            }
        )
        for name in (
            "QU_KAFKA_SASL_MECHANISM",
            "QU_KAFKA_SASL_USERNAME",
            "QU_KAFKA_SASL_PASSWORD",
            "QU_KAFKA_SSL_CA_FILE",
        ):
            env.pop(name, None)
        # The embedded Redis's own password, whatever QU_REDIS_PASSWORD names (that one is another Redis's).
        password = _env_value(self.settings.embedded_redis_password())
        if password is None:
            env.pop("QU_REDIS_PASSWORD", None)
        else:
            env["QU_REDIS_PASSWORD"] = password
        return env

    # -- up -----------------------------------------------------------------------------------------

    def up(self) -> StackState:
        existing = self.state()
        if existing is not None:
            dead = [p.name for p in existing.processes if not p.alive]
            if existing.processes and not dead:
                raise AlreadyRunning(existing)
            if len(dead) < len(existing.processes):
                raise StackError(f"the stack is partly running ({', '.join(dead)} stopped): run `qu down` first")
            StackState.remove(self.state_dir)  # a stale file from a stack that is gone
        for p in self._ports():
            if port_in_use(p.port):
                raise StackError(f"port {p.port} for {p.what} is already in use: set {p.setting} to another port")
        try:
            resolve_build(self.settings.resolved_catalog_dir)
        except CatalogNotFoundError as err:
            raise StackError(f"{err}; `qu up` serves an imported catalog") from err

        state = StackState(self.endpoints())
        try:
            self._start_all(state)
        except BaseException:
            self.report("start failed: stopping what was started")
            self.down()
            raise
        return state

    def _record(self, state: StackState, record: ProcessRecord) -> None:
        state.processes = [p for p in state.processes if p.name != record.name] + [record]
        state.save(self.state_dir)

    def settings_for_clients(self) -> Settings:
        """The settings of a command run beside the stack (`qu teacher run`): its spans go to the stack's trace
        store while the stack runs one, as the stack's own processes' do; and while the stack runs a local LLM,
        the teacher asks it (its URL and the model name it answers to), unless QU_TEACHER_BASE_URL was given."""
        state = self.state()
        running = {p.name for p in state.processes if p.alive} if state is not None else set()
        update: dict[str, object] = {}
        if self.keeps_traces and "traces" in running:
            update["otlp_traces_endpoint"] = self.span_store_url
        if state is not None and "llm" in running and "teacher_base_url" not in self.settings.model_fields_set:
            update["teacher_base_url"] = state.endpoints.get("teacher_llm", self.local_llm_url)
            if "teacher_model" not in self.settings.model_fields_set and state.endpoints.get("teacher_llm_model"):
                update["teacher_model"] = state.endpoints["teacher_llm_model"]
        return self.settings.model_copy(update=update) if update else self.settings

    @property
    def triton_trace_url(self) -> str | None:
        """Where the embedded Triton sends its spans: the trace store's JSON port, or the collector's traces URL."""
        s = self.settings
        if not s.triton_tracing:
            return None
        if s.otlp_traces_endpoint:
            return s.otlp_traces_endpoint
        if s.otlp_endpoint:  # the standard rule: the base endpoint plus the signal's path
            return s.otlp_endpoint.rstrip("/") + "/v1/traces"
        return f"http://127.0.0.1:{s.span_store_json_port}/v1/traces"

    @property
    def span_store_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.span_store_port}/v1/traces"

    def _start_all(self, state: StackState) -> None:
        state.save(self.state_dir)
        # The trace store first: every other process sends its spans there from its first one.
        for name in (("traces",) if self.keeps_traces else ()) + ("kafka", "redis", "triton", "refresher"):
            self._start(state, name)
        if self.settings.teacher_local_model:
            self._start(state, "llm")
        if self.settings.record_traffic:
            self._start(state, "recorder")
        for i in range(self.settings.workers):
            self._start(state, f"worker-{i}", wait=False)
        for record in state.processes:
            if record.name.startswith("worker-"):
                self._wait_for_log(record, HANDLER_READY, timeout=90)
        self.report(f"{self.settings.workers} worker(s) ready; head-tag refresher running")

    def restart(self, name: str) -> ProcessRecord:
        """Stop one process of the running stack (if it runs) and start it again on the same ports."""
        state = self.state()
        if state is None:
            raise StackError("the stack is not running: `qu up` first")
        for record in state.processes:
            if record.name == name:
                self._stop(record, state)
        return self._start(state, name)

    def restart_with(self, name: str, **updates: object) -> ProcessRecord:
        """``restart`` with some settings changed for this one start (a measurement's worker: another sampling
        ratio, a profiler); ``restart(name)`` brings back the stack's own."""
        return EmbeddedStack(self.settings.model_copy(update=updates), self.report).restart(name)

    def stop(self, name: str) -> bool:
        """Stop one process of the running stack, leaving it recorded (``restart`` brings it back)."""
        state = self.state()
        records = [p for p in state.processes if p.name == name] if state else []
        if state is None or not records:
            raise StackError(f"no process named {name!r} in the stack")
        return self._stop(records[0], state)

    def _stop(self, record: ProcessRecord, state: StackState) -> bool:
        # Triton's Python-backend stubs can outlive the server: its group goes with it.
        stopped = record.stop(group=record.name == "triton")
        if record.name == "triton":
            prefix = state.endpoints.get("triton_shm_prefix")
            if prefix:
                remove_shared_memory(prefix)
        return stopped

    def _start(self, state: StackState, name: str, *, wait: bool = True) -> ProcessRecord:
        s = self.settings
        if name == "kafka":
            broker = TansuBroker(s.kafka_port, self.logs / "kafka.log")
            broker.start()
            record = ProcessRecord.of("kafka", _pid(broker.pid), [], broker.log_file)
            self._record(state, record)
            created = ensure_topics(broker.bootstrap)
            self.report(f"kafka on {broker.bootstrap}; created topics {', '.join(created) or '(all existed)'}")
        elif name == "redis":
            redis = RedisServer(
                s.redis_port, self.logs / "redis.log", self.stack_dir / "redis", s.embedded_redis_password_file
            )
            redis.start()
            record = ProcessRecord.of("redis", _pid(redis.pid), [], redis.log_file)
            self._record(state, record)
            self.report(f"redis on {redis.url}")
        elif name == "traces":
            command = [sys.executable, "-m", "services.telemetry.span_store", "--port", str(s.span_store_port)]
            command += ["--json-port", str(s.span_store_json_port), "--dir", str(self.traces_dir)]
            record = self._spawn("traces", command, self.child_environment())
            self._record(state, record)
            self._wait_for_log(record, SPAN_STORE_READY, timeout=30)
            self.report(f"trace store on {self.span_store_url}, spans in {self.traces_dir}")
        elif name == "triton":
            record = self._start_triton(state)
        elif name == "refresher":
            command = [sys.executable, "-m", "services.cli.main", "refresher"]
            record = self._spawn("refresher", command, self._with_metrics_port("refresher"))
            self._record(state, record)
        elif name == "llm":
            record = self._start_local_llm(state)
        elif name == "recorder":
            command = [sys.executable, "-m", "services.cli.main", "record"]
            record = self._spawn("recorder", command, self.child_environment())
            self._record(state, record)
            self.report(f"traffic recorder archiving into {self.settings.resolved_archive_dir}")
        elif name.startswith("worker-") and name.removeprefix("worker-").isdigit():
            port = s.worker_web_port + int(name.removeprefix("worker-"))
            worker = [
                sys.executable,
                "-m",
                "streams",
                "worker",
                "--web-port",
                str(port),
                "--web-host",
                "127.0.0.1",
                # --web-host only names the host in URLs; the web server binds --web-bind (Faust: 0.0.0.0).
                "--web-bind",
                "127.0.0.1",
                "--loglevel",
                "info",
            ]
            # A worker stops itself when an outcome could not be delivered (it must not commit it), and may
            # crash or be killed: its keeper starts it again with backoff (services/stack/keeper.py).
            keeper = [sys.executable, "-m", "services.stack.keeper", "--name", name, "--status"]
            command = [*keeper, str(self.keeper_status_path(name)), "--", *worker]
            record = self._spawn(name, command, self._with_metrics_port(name))
            self._record(state, record)
            if wait:
                self._wait_for_log(record, HANDLER_READY, timeout=90)
        else:
            raise StackError(f"no service named {name!r}: traces, kafka, redis, triton, refresher, llm or worker-N")
        return record

    def _with_metrics_port(self, name: str) -> dict[str, str]:
        env = self.child_environment()
        env["QU_METRICS_PORT"] = str(self.metrics_ports().get(name, 0))
        return env

    def _start_triton(self, state: StackState) -> ProcessRecord:
        s = self.settings
        # Exported student versions (`qu student export`) live in the state dir; the fresh copy gets them back.
        repository, restored = prepare_student_repository(s, self.stack_dir / "model_repository")
        if restored:
            self.report(f"triton: qu_student versions {restored} restored from {self.state_dir / 'student'}")
        triton = TritonServer(
            repository,
            s.triton_http_port,
            s.triton_grpc_port,
            self.logs / "triton.log",
            self.stack_dir / "triton",
            metrics_port=s.triton_metrics_port or None,
            trace_url=self.triton_trace_url,
        )
        self.report("triton: loading models (the student loads the catalog and MiniLM)")
        triton.start()
        # The shared-memory prefix is kept so `qu down`, in another process, removes exactly this server's regions.
        state.endpoints["triton_shm_prefix"] = triton.shm_prefix
        record = ProcessRecord.of("triton", _pid(triton.pid), [], triton.log_file)
        self._record(state, record)
        self.report(f"triton on grpc {triton.grpc_url}, http {triton.http_url}")
        return record

    def _start_local_llm(self, state: StackState) -> ProcessRecord:
        s = self.settings
        assert s.teacher_local_model is not None
        server = LocalLLMServer(
            s.teacher_local_model,
            s.teacher_local_port,
            self.logs / "llm.log",
            python=s.teacher_local_python,
            n_ctx=s.teacher_local_context,
            threads=s.teacher_local_threads,
            extra_buffers=s.teacher_local_extra_buffers,
        )
        self.report(f"local LLM teacher: loading {s.teacher_local_model}")
        server.start()
        record = ProcessRecord.of("llm", _pid(server.pid), server.command(), server.log_file)
        state.endpoints["teacher_llm"] = server.base_url
        self._record(state, record)  # recorded first: `qu down` stops it even if what follows fails
        state.endpoints["teacher_llm_model"] = served_model(server.base_url)
        state.save(self.state_dir)
        self.report(f"local LLM teacher {state.endpoints['teacher_llm_model']} on {server.base_url}")
        return record

    def _spawn(self, name: str, command: list[str], env: dict[str, str]) -> ProcessRecord:
        log = self.logs / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_offsets[name] = log.stat().st_size if log.exists() else 0
        with log.open("ab") as handle:
            process = subprocess.Popen(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
            )
        return ProcessRecord.of(name, process.pid, command, log)

    def _wait_for_log(self, record: ProcessRecord, marker: str, *, timeout: float) -> None:
        """Wait for ``marker`` in what the process wrote (its log may hold earlier runs: skip those)."""
        deadline = time.monotonic() + timeout
        path = Path(record.log)
        since = self._log_offsets.get(record.name, 0)
        while time.monotonic() < deadline:
            with path.open("rb") as handle:
                handle.seek(since)
                if marker.encode() in handle.read():
                    return
            if not record.alive:
                raise StackError(f"{record.name} exited while starting; see {record.log}:\n{_tail(path)}")
            time.sleep(0.2)
        raise StackError(f"{record.name} was not ready within {timeout:.0f} s; see {record.log}:\n{_tail(path)}")

    # -- down ---------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every process the state file names, in dependency order; returns the names stopped."""
        state = self.state()
        if state is None:
            return []
        order = {prefix: i for i, prefix in enumerate(STOP_ORDER)}
        stopped = [
            record.name
            for record in sorted(state.processes, key=lambda p: order.get(p.name.split("-")[0], len(order)))
            if self._stop(record, state)
        ]
        StackState.remove(self.state_dir)
        return stopped


def _env_value(value: object) -> str | None:
    """A setting as its environment variable must spell it for a child to read the same value.

    ``str()`` is wrong twice: a SecretStr prints as its mask, and a relative path would be read
    again relative to the child's working directory (the state dir), not to where `qu up` ran.
    """
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value.resolve())
    if isinstance(value, list | tuple | dict | set):
        return orjson.dumps(value, default=str).decode()  # pydantic-settings reads complex values as JSON
    return str(value)


def _pid(pid: int | None) -> int:
    if pid is None:
        raise StackError("a service reported no PID right after starting")
    return pid


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
