"""``qu up`` / ``qu status`` / ``qu down`` as an operator uses them."""

from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.stack.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def env_of(settings: Settings) -> dict[str, str]:
    return {f"QU_{name.upper()}": str(getattr(settings, name)) for name in settings.model_fields_set}


def test_status_names_the_endpoints_and_the_processes(embedded_stack: EmbeddedStack, stack_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["status", "--json"], env=env_of(stack_settings))
    assert result.exit_code == 0, result.output
    status = orjson.loads(result.stdout)
    assert status["running"] is True
    endpoints = status["endpoints"]
    assert endpoints["kafka"] == f"127.0.0.1:{stack_settings.kafka_port}"
    assert endpoints["redis"].startswith("redis://127.0.0.1:")
    assert {"triton_grpc", "triton_http"} <= set(endpoints)
    names = {p["name"] for p in status["processes"]}
    assert names == {"kafka", "redis", "triton", "refresher", "worker-0"}
    assert all(p["alive"] for p in status["processes"])


def test_a_second_up_says_what_is_already_running(embedded_stack: EmbeddedStack, stack_settings: Settings) -> None:
    result = CliRunner().invoke(app, ["up"], env=env_of(stack_settings))
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
