"""A runnable copy of the committed Triton model repository, with this machine's paths in it.

The committed ``triton_models/*/config.pbtxt`` cannot know where the catalog and the
embedding weights lie on a given machine, so the stack copies the repository into its state
directory and appends those paths as model config ``parameters``; model.py reads them there.
"""

from __future__ import annotations

import shutil
import tempfile
from fnmatch import fnmatch
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.text_encoding import CEscape

from services.errors import QuError

CONFIG = "config.pbtxt"
# The production student's ensemble needs the tensorrtllm backend and a GPU (docs/gpu-student.md); the
# CPU server loads every model it is given (--load-model=*), and one that cannot load stops it.
GPU_ONLY_MODELS = "qu_student_trtllm*"


class ModelRepositoryError(QuError):
    pass


def committed_model_repository() -> Path:
    """``triton_models/`` of this checkout (the repository is not shipped inside the package)."""
    return Path(__file__).resolve().parents[2] / "triton_models"


def _parameters_block(parameters: dict[str, str]) -> str:
    lines = ["", "# Written by services.stack.model_repository.materialize_model_repository for this machine."]
    for key, value in parameters.items():
        escaped = CEscape(value.encode(), as_utf8=True)
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}')
    return "\n".join(lines) + "\n"


def _check_config(path: Path, parameters: dict[str, str]) -> None:
    """Parse the written config as Triton will, so a broken file fails here with its path, not in the server log."""
    from tritonclient.grpc import model_config_pb2

    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(path.read_text(encoding="utf-8"), config)
    except text_format.ParseError as err:
        raise ModelRepositoryError(f"{path} is not a valid Triton model config: {err}") from err
    for key, value in parameters.items():
        got = config.parameters[key].string_value
        if got != value:
            # A committed config that sets the same key would shadow or clash with ours.
            raise ModelRepositoryError(
                f"{path}: parameter {key!r} reads {got!r}, expected {value!r}: remove {key!r} from the committed config"
            )


def materialize_model_repository(
    src: Path,
    dest: Path,
    *,
    catalog_dir: Path,
    embedding_model_path: Path,
    embedding_model_id: str | None = None,
    embedding_graph: Path | None = None,
) -> Path:
    """Copy the model repository ``src`` to ``dest`` (replacing it) with the local paths in every config.

    Every model gets ``catalog_dir`` and ``embedding_model_path`` (absolute), and
    ``embedding_model_id`` when given (the student then refuses a catalog embedded by another
    model), and ``embedding_graph`` when given (the day-one student then embeds with onnxruntime,
    services/student/export/embedding_graph.py). The copy is built beside ``dest`` and renamed into
    place, so a server reloading ``dest`` sees the old repository or the new one (for an instant,
    none), never half of one. Returns ``dest``.
    """
    if not src.is_dir():
        raise ModelRepositoryError(f"no model repository at {src}: expected the checkout's triton_models/ directory")
    configs = [c for c in sorted(src.glob(f"*/{CONFIG}")) if not fnmatch(c.parent.name, GPU_ONLY_MODELS)]
    if not configs:
        raise ModelRepositoryError(f"{src} holds no */{CONFIG}: not a Triton model repository")
    for name, path in (("catalog_dir", catalog_dir), ("embedding_model_path", embedding_model_path)):
        if not path.exists():
            raise ModelRepositoryError(f"{name} {path} does not exist: import the catalog / install the model first")
    parameters = {
        "catalog_dir": str(catalog_dir.resolve()),
        "embedding_model_path": str(embedding_model_path.resolve()),
    }
    if embedding_model_id:
        parameters["embedding_model_id"] = embedding_model_id
    if embedding_graph is not None:
        if not embedding_graph.is_file():
            raise ModelRepositoryError(f"embedding_graph {embedding_graph} does not exist")
        parameters["embedding_graph"] = str(embedding_graph.resolve())

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", GPU_ONLY_MODELS)
        shutil.copytree(src, staging, dirs_exist_ok=True, ignore=ignore)
        for config in sorted(staging.glob(f"*/{CONFIG}")):
            with config.open("a", encoding="utf-8") as handle:
                handle.write(_parameters_block(parameters))
            _check_config(config, parameters)
        staging.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
