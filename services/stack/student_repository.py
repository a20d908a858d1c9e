"""The model repository a Triton serving ``qu_student`` runs from, prepared for this machine or pod.

One recipe for the embedded stack (`qu up`) and for a container (`qu triton serve`): the committed
``triton_models/`` copied with this machine's catalog and embedding paths, the query embedder's ONNX graph
(exported once into ``STATE_DIR/models``), and every student version published by `qu student export`
(kept under ``STATE_DIR/student``) put back.
"""

from __future__ import annotations

from pathlib import Path

from services.settings import Settings
from services.stack.model_repository import committed_model_repository, materialize_model_repository
from services.student.export.embedding_graph import ensure_embedding_graph
from services.student.export.publish import restore_published_versions


def prepare_student_repository(settings: Settings, dest: Path) -> tuple[Path, list[int]]:
    """Write the serving repository to ``dest`` (replacing it); returns it and the published versions restored."""
    repository = materialize_model_repository(
        committed_model_repository(),
        dest,
        catalog_dir=settings.resolved_catalog_dir,
        embedding_model_path=settings.resolved_embedding_model_path(),
        embedding_model_id=settings.embedding_model_id,
        embedding_graph=ensure_embedding_graph(
            settings.state_dir / "models", settings.resolved_embedding_model_path(), settings.embedding_model_id
        ),
    )
    return repository, restore_published_versions(settings.state_dir, repository)
