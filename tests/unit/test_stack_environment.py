"""What a process started by the stack sees: the settings `qu up` was given, secrets and paths intact."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from services.settings import Settings
from services.stack.embedded import EmbeddedStack

# The child builds its settings from the environment, as every entrypoint does, and reports them.
PROBE = """
import orjson
from services.settings import Settings
s = Settings()
print(orjson.dumps({
    "teacher_api_key": s.teacher_api_key.get_secret_value() if s.teacher_api_key else None,
    "conversions_dir": str(s.resolved_conversions_dir),
    "curriculum_dir": str(s.resolved_curriculum_dir),
    "catalog_dir": str(s.resolved_catalog_dir),
    "embedding_model_path": str(s.embedding_model_path),
}).decode(), flush=True)
"""


def test_a_child_sees_the_real_secret_and_absolute_paths(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative settings are relative to where `qu up` ran, not to the state dir
    settings = Settings(
        state_dir=Path("state"),
        catalog_dir=Path("data/catalog"),
        conversions_dir=Path("data/conversions"),
        curriculum_dir=Path("data/curriculum"),
        embedding_model_path=Path("models/minilm"),
        teacher_api_key=SecretStr("sk-the-real-key"),
    )
    stack = EmbeddedStack(settings)
    record = stack._spawn("probe", [sys.executable, "-c", PROBE], stack.child_environment())
    process = record.process()
    assert process is not None
    process.wait(60)
    time.sleep(0.05)  # the log file is closed by the child's exit
    seen = orjson.loads(Path(record.log).read_bytes().splitlines()[-1])

    assert seen == {
        "teacher_api_key": "sk-the-real-key",
        "conversions_dir": str(tmp_path / "data/conversions"),
        "curriculum_dir": str(tmp_path / "data/curriculum"),
        "catalog_dir": str(tmp_path / "data/catalog"),
        "embedding_model_path": str(tmp_path / "models/minilm"),
    }


def test_a_setting_given_as_none_is_not_sent_as_the_string_none(clean_env: None, tmp_path: Path) -> None:
    env = EmbeddedStack(Settings(state_dir=tmp_path, teacher_api_key=None, conversions_dir=None)).child_environment()
    assert "QU_TEACHER_API_KEY" not in env and "QU_CONVERSIONS_DIR" not in env


def test_children_get_the_embedded_redis_password_and_only_its_address_uses_it(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(state_dir=tmp_path, redis_port=16999, redis_url="redis://127.0.0.1:16999/0")
    settings.embedded_redis_password_file.parent.mkdir(parents=True)
    settings.embedded_redis_password_file.write_text("the-stack-password\n")
    monkeypatch.setenv("QU_REDIS_PASSWORD", "another-redis-password")  # the shell's, for some other Redis

    assert EmbeddedStack(settings).child_environment()["QU_REDIS_PASSWORD"] == "the-stack-password"
    monkeypatch.delenv("QU_REDIS_PASSWORD")
    found = settings.resolved_redis_password()
    assert found is not None and found.get_secret_value() == "the-stack-password"
    # Another Redis is never sent the stack's password; an explicit one always wins.
    assert Settings(state_dir=tmp_path, redis_url="redis://cache.internal:6379/0").resolved_redis_password() is None
    given = Settings(state_dir=tmp_path, redis_password=SecretStr("given")).resolved_redis_password()
    assert given is not None and given.get_secret_value() == "given"
