"""``qu up`` / ``qu status`` / ``qu down`` as an operator uses them."""

from __future__ import annotations

import ipaddress
import socket
import stat
from pathlib import Path

import orjson
import psutil
import pytest
import redis
from typer.testing import CliRunner

from services.cli.main import app
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.stack.ports import free_port
from tests.fixtures.stack import settings_env

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_status_names_the_endpoints_and_the_processes(embedded_stack: EmbeddedStack, stack_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["status", "--json"], env=settings_env(stack_settings))
    assert result.exit_code == 0, result.output
    status = orjson.loads(result.stdout)
    assert status["running"] is True
    endpoints = status["endpoints"]
    assert endpoints["kafka"] == f"127.0.0.1:{stack_settings.kafka_port}"
    assert endpoints["redis"].startswith("redis://127.0.0.1:")
    assert {"triton_grpc", "triton_http"} <= set(endpoints)
    assert endpoints["teacher_llm"] == f"http://127.0.0.1:{stack_settings.teacher_local_port}/v1"
    assert endpoints["teacher_llm_model"] == "SmolLM2-135M-Instruct.Q4_1"  # the name the server answers to
    names = {p["name"] for p in status["processes"]}
    # The tests record traffic and run the local LLM teacher.
    assert names == {"traces", "kafka", "redis", "triton", "refresher", "llm", "recorder", "worker-0"}
    metrics = {k for k in endpoints if k.startswith("metrics_")}
    assert metrics == {"metrics_refresher", "metrics_worker-0", "metrics_triton"} and "traces" in endpoints
    assert all(p["alive"] for p in status["processes"])


def test_a_second_up_says_what_is_already_running(embedded_stack: EmbeddedStack, stack_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["up"], env=settings_env(stack_settings))
    assert result.exit_code == 0, result.output
    assert "already running" in result.output and "worker-0" in result.output


def test_a_taken_port_is_an_error_naming_the_port_and_its_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"QU_STATE_DIR": str(tmp_path), "QU_KAFKA_PORT": str(free_port()), "QU_REDIS_PORT": str(port)}
        result = CliRunner().invoke(app, ["up"], env=env)
    assert result.exit_code == 1
    assert f"port {port}" in result.output and "QU_REDIS_PORT" in result.output
    assert not (tmp_path / "stack" / "state.json").exists()  # nothing was started


def test_down_without_a_stack_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["down"], env={"QU_STATE_DIR": str(tmp_path)})
    assert result.exit_code == 0 and "nothing was running" in result.output


def test_the_embedded_redis_refuses_a_client_without_its_password(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    password_file = stack_settings.state_dir / "stack" / "redis" / "password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    # The server's own answer on a bare socket (redis-py opens with HELLO and words its refusal differently).
    with socket.create_connection(("127.0.0.1", stack_settings.redis_port), timeout=5) as anonymous:
        anonymous.sendall(b"*2\r\n$3\r\nGET\r\n$13\r\nqu:v1:current\r\n")
        assert anonymous.recv(256).startswith(b"-NOAUTH")
    anonymous_client = redis.Redis(host="127.0.0.1", port=stack_settings.redis_port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        anonymous_client.get("qu:v1:current")
    anonymous_client.close()
    # What every `qu` command on this state dir finds, and what the stack's own processes were given.
    password = stack_settings.resolved_redis_password()
    assert password is not None and password.get_secret_value() == password_file.read_text().strip()
    client = redis.Redis(
        host="127.0.0.1", port=stack_settings.redis_port, password=password.get_secret_value(), socket_timeout=5
    )
    assert client.ping()
    client.close()


def on_loopback(ip: str) -> bool:
    """127.0.0.1, also as an IPv6 socket's IPv4-mapped address (Triton's gRPC listens so), and nothing else."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address == ipaddress.IPv4Address("127.0.0.1")


def test_every_listening_socket_of_the_stack_is_on_loopback(embedded_stack: EmbeddedStack) -> None:
    state = embedded_stack.state()
    assert state is not None
    listening: dict[str, set[tuple[str, int]]] = {}
    for record in state.processes:
        process = record.process()
        assert process is not None, f"{record.name} is not running"
        for member in [process, *process.children(recursive=True)]:  # keepers' workers, Triton's stubs
            for conn in member.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    listening.setdefault(record.name, set()).add((conn.laddr.ip, conn.laddr.port))
    # Each service is there, on the port its setting names: the check below saw every one.
    settings = embedded_stack.settings
    expected = [
        ("kafka", settings.kafka_port),
        ("redis", settings.redis_port),
        ("triton", settings.triton_grpc_port),
        ("triton", settings.triton_metrics_port),
        ("worker-0", settings.worker_web_port),
        ("traces", settings.span_store_port),
        ("traces", settings.span_store_json_port),
        ("llm", settings.teacher_local_port),
        *embedded_stack.metrics_ports().items(),  # each worker's and the refresher's Prometheus endpoint
    ]
    for name, port in expected:
        assert port in {p for _, p in listening.get(name, set())}, (name, port, listening.get(name))
    exposed = {name: sorted(a for a in addresses if not on_loopback(a[0])) for name, addresses in listening.items()}
    assert not any(exposed.values()), f"listening beyond loopback: {exposed}"
