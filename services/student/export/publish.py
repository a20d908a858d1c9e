"""A new ``qu_student`` version in a Triton model repository, a durable copy of it, and the live reload.

Version numbers only grow: the next one is one past the highest found in the served repository
and in the published store (``STATE_DIR/student/published/qu_student/``). The store matters
because the stack re-materializes the served repository from ``triton_models/`` every time Triton
starts; :func:`restore_published_versions` puts the exported versions back, so a restart serves
the newest export instead of falling back to version 1.

A version directory is written beside its final place and renamed into it, so Triton never loads
half a version. Weights are never committed: they live only under the state directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from services.errors import QuError

# The Triton model that answers cache misses (QU_STUDENT_MODEL's default): the versions published here are its.
STUDENT_MODEL = "qu_student"

PUBLISHED = Path("student") / "published"
TEMPLATE = Path(__file__).resolve().parent / "triton_model.py"


class PublishError(QuError):
    """A version could not be written to, or loaded from, the model repository."""


def served_repository(state_dir: Path) -> Path:
    """The model repository the embedded stack's Triton serves (see services.stack.embedded)."""
    return state_dir / "stack" / "model_repository"


def published_store(state_dir: Path, model: str = STUDENT_MODEL) -> Path:
    return state_dir / PUBLISHED / model


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(*model_dirs: Path) -> int:
    """One past the highest version in any of ``model_dirs`` (2 when only the committed version 1 exists)."""
    found = [v for d in model_dirs for v in _versions(d)]
    return max([1, *found]) + 1


def link_or_copy(src: str, dst: str) -> None:
    # Hard links: a version is ~50-180 MB of graphs, and the two copies never change after they are written.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def install_version(source: Path, model_dir: Path, version: int) -> Path:
    """Copy the version directory ``source`` to ``model_dir/version`` atomically; returns the new directory."""
    target = model_dir / str(version)
    if target.exists():
        raise PublishError(f"{target} already exists: versions are never overwritten")
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-{version}.", dir=model_dir.parent))
    try:
        shutil.copytree(source, staging / "v", copy_function=link_or_copy)
        (staging / "v").chmod(0o755)
        (staging / "v").rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_repository(repository: Path, model: str = STUDENT_MODEL) -> Path:
    """``repository/model``, after checking it is a model directory Triton serves (has its config.pbtxt)."""
    model_dir = repository / model
    if not (model_dir / "config.pbtxt").is_file():
        raise PublishError(
            f"{model_dir} has no config.pbtxt: not the served model repository (start the stack with `qu up`, "
            "or pass --repository DIR of a materialized repository)"
        )
    return model_dir


def planned_version(state_dir: Path, repository: Path, model: str = STUDENT_MODEL) -> int:
    return next_version(check_repository(repository, model), published_store(state_dir, model))


def publish(version_source: Path, version: int, state_dir: Path, repository: Path, model: str = STUDENT_MODEL) -> Path:
    """Install ``version_source`` as ``version`` of ``model`` in ``repository`` and in the published store."""
    model_dir = check_repository(repository, model)
    store = published_store(state_dir, model)
    installed = install_version(version_source, model_dir, version)
    if store.resolve() != model_dir.resolve():
        install_version(version_source, store, version)
    return installed


def restore_published_versions(state_dir: Path, repository: Path, model: str = STUDENT_MODEL) -> list[int]:
    """Put every published version of ``model`` back into a freshly materialized ``repository``; returns them."""
    store = published_store(state_dir, model)
    restored = []
    for version in _versions(store):
        if not (repository / model / str(version)).exists():
            install_version(store / str(version), repository / model, version)
            restored.append(version)
    return restored


def load_model(http_url: str, model: str = STUDENT_MODEL, *, timeout: float = 300.0) -> None:
    """Ask the running Triton (explicit model control) to load ``model``'s newest version; no restart.

    If the load fails Triton keeps serving the version it had; the error carries Triton's reason.
    """
    request = urllib.request.Request(f"http://{http_url}/v2/repository/models/{model}/load", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        body = err.read().decode("utf-8", "replace")
        raise PublishError(f"Triton on {http_url} could not load {model!r}: {body}") from err
    except (urllib.error.URLError, OSError) as err:
        raise PublishError(
            f"Triton on {http_url} did not answer a load of {model!r}: {err} (is the stack up?)"
        ) from err
