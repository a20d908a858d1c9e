"""Every guardrail setting reaches the guardrails the worker, the teacher and ``qu eval`` build.

The worker once built ``GuardrailThresholds(settings.category_min_similarity)``, so
``QU_GUARDRAIL_MAX_CATEGORIES``, ``QU_REWRITE_MIN_SIMILARITY`` and ``QU_SUBSTITUTE_*`` were silently
ignored in real time. The settings are found, not listed: one added to the guardrails section of
``services/settings.py`` (or described "Guardrail: ...") is tested without touching this file.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
from pydantic.fields import FieldInfo

from services import settings as settings_module
from services.annotation.runtime import build_runtime
from services.catalog.artifacts import build_catalog, write_catalog
from services.catalog.model import Product
from services.evaluation.registry import PredictorEnv
from services.guardrails import GuardrailThresholds
from services.settings import Settings

_SECTION = re.compile(r"# --- guardrails.*?\n(.*?)# --- end guardrails ---", re.S)
_FIELD = re.compile(r"^    (\w+):", re.M)


def guardrail_settings() -> dict[str, FieldInfo]:
    """The settings of the guardrails section of settings.py, and any other described as a guardrail."""
    section = _SECTION.search(inspect.getsource(settings_module))
    assert section is not None, "services/settings.py has no '# --- guardrails' ... '# --- end guardrails ---' section"
    names = set(_FIELD.findall(section.group(1)))
    fields_ = Settings.model_fields
    names |= {n for n, f in fields_.items() if (f.description or "").startswith("Guardrail:")}
    return {n: fields_[n] for n in sorted(names)}


def other_value(name: str, info: FieldInfo) -> str:
    """A valid value of the setting other than its default, as an environment variable would hold it."""
    default = info.default
    if get_origin(info.annotation) is Literal:
        return str(next(choice for choice in get_args(info.annotation) if choice != default))
    if info.annotation is int:
        return str(default + 1)
    if info.annotation is float:
        return str(round(default + 0.0123, 4))
    raise AssertionError(f"setting {name}: no test value for a {info.annotation}; teach other_value() about it")


@pytest.fixture
def catalog_dir(tmp_path: Path) -> Path:
    products = [Product("1", "Whole Milk", "Horizon Organic", ("dairy eggs", "milk"))]
    return write_catalog(build_catalog(products, embedder=None), tmp_path / "catalog")


def worker_thresholds(settings: Settings) -> Any:
    async def build() -> Any:
        runtime = await build_runtime(settings)  # cheap: connections are made on first use
        try:
            return runtime.handler.guardrails.thresholds
        finally:
            await runtime.close()

    return asyncio.run(build())


def test_the_guardrails_section_is_found_and_maps_onto_every_threshold() -> None:
    found = guardrail_settings()
    assert len(found) >= len(fields(GuardrailThresholds)), sorted(found)


def test_every_guardrail_setting_reaches_the_workers_handler_on_its_own(
    monkeypatch: pytest.MonkeyPatch, clean_env: None, tmp_path: Path, catalog_dir: Path
) -> None:
    base = Settings(state_dir=tmp_path / "state", catalog_dir=catalog_dir)
    default = worker_thresholds(base)
    assert default == GuardrailThresholds.from_settings(base)
    ignored = []
    for name, info in guardrail_settings().items():
        env = f"QU_{name.upper()}"
        with monkeypatch.context() as patch:
            patch.setenv(env, other_value(name, info))
            settings = Settings(state_dir=tmp_path / "state", catalog_dir=catalog_dir)
            assert getattr(settings, name) != getattr(base, name), f"{env} did not change the settings"
            if worker_thresholds(settings) == default:
                ignored.append(env)
    assert ignored == [], f"the worker ignores {ignored}"


def test_all_guardrail_settings_together_change_every_threshold_the_worker_and_eval_use(
    monkeypatch: pytest.MonkeyPatch, clean_env: None, tmp_path: Path, catalog_dir: Path
) -> None:
    for name, info in guardrail_settings().items():
        monkeypatch.setenv(f"QU_{name.upper()}", other_value(name, info))
    settings = Settings(state_dir=tmp_path / "state", catalog_dir=catalog_dir)
    expected = GuardrailThresholds.from_settings(settings)
    unchanged = [f.name for f in fields(GuardrailThresholds) if getattr(expected, f.name) == f.default]
    assert unchanged == [], f"no setting changes {unchanged}"
    assert worker_thresholds(settings) == expected
    assert PredictorEnv(settings).guardrails.thresholds == expected
