"""The GPU model repository: the committed ``qu_student_trtllm*`` templates, filled for one deployment.

The committed configs hold ``${name}`` placeholders where only the deployment knows the value (the
engine directory, the tokenizer directory, the student's version). :func:`fill_gpu_repository`
copies the four models of the ensemble and replaces every placeholder, refusing a missing or an
unknown value, and parses each written config as Triton will, so a bad value fails here and not in
the server log. ``deploy/gpu/fill_templates.py`` is its command line.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.text_encoding import CEscape

from services.errors import QuError

__all__ = ["CONFIG", "ENSEMBLE", "GPU_MODELS", "PLACEHOLDER", "GpuRepositoryError", "fill_gpu_repository"]

CONFIG = "config.pbtxt"
ENSEMBLE = "qu_student_trtllm"
GPU_MODELS = (ENSEMBLE, f"{ENSEMBLE}_preprocess", f"{ENSEMBLE}_engine", f"{ENSEMBLE}_postprocess")
PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class GpuRepositoryError(QuError):
    pass


def placeholders(src: Path) -> set[str]:
    """The placeholder names the committed GPU configs under ``src`` use."""
    names: set[str] = set()
    for model in GPU_MODELS:
        names.update(PLACEHOLDER.findall(_config(src, model).read_text(encoding="utf-8")))
    return names


def _config(root: Path, model: str) -> Path:
    path = root / model / CONFIG
    if not path.is_file():
        raise GpuRepositoryError(f"{path} is missing: {root} is not a checkout's triton_models/ with the GPU student")
    return path


def fill_gpu_repository(src: Path, dest: Path, values: Mapping[str, str]) -> Path:
    """Write the ensemble's models from ``src`` into ``dest`` (each replaced) with ``values`` filled in.

    ``dest`` may already hold other models; only the four GPU models are replaced. Returns ``dest``.
    """
    wanted = placeholders(src)
    missing = sorted(wanted - values.keys())
    unknown = sorted(values.keys() - wanted)
    if missing or unknown:
        raise GpuRepositoryError(
            f"the GPU configs need values for {sorted(wanted)}; missing {missing}, not used by any config {unknown}"
        )
    for key, value in values.items():
        if not value.strip():
            raise GpuRepositoryError(f"the value for {key!r} is empty")
    dest.mkdir(parents=True, exist_ok=True)
    for model in GPU_MODELS:
        text = _config(src, model).read_text(encoding="utf-8")
        # Values land inside protobuf string literals: escaped, a path with a quote cannot break the file.
        filled = PLACEHOLDER.sub(lambda m: CEscape(values[m.group(1)].encode(), as_utf8=True), text)
        target = dest / model
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(src / model, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".gitkeep"))
        for version in (src / model).iterdir():
            # Triton needs the version directory even where it is empty (ensemble, engine).
            if version.is_dir() and version.name.isdigit():
                (target / version.name).mkdir(exist_ok=True)
        config = target / CONFIG
        config.write_text(filled, encoding="utf-8")
        _check(config)
    return dest


def _check(path: Path) -> None:
    from tritonclient.grpc import model_config_pb2

    text = path.read_text(encoding="utf-8")
    left = sorted(set(PLACEHOLDER.findall(text)))
    if left:
        raise GpuRepositoryError(f"{path} still holds placeholders {left}")
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as err:
        raise GpuRepositoryError(f"{path} is not a valid Triton model config: {err}") from err
