"""Hearth settings: frozen dataclasses filled from defaults < profile TOML < ``HEARTH_*`` variables.

A profile is a TOML file in this folder (``cpu.toml``, ``test.toml``, ``gpu.toml``) or any path.
Every field has an environment variable: fields of ``[server]`` are ``HEARTH_<FIELD>`` (so
``HEARTH_HOST``, ``HEARTH_PORT``), fields of any other section are ``HEARTH_<SECTION>_<FIELD>``
(``HEARTH_LLM_N_THREADS``). ``HEARTH_DATA_DIR`` and ``HEARTH_PROFILE`` pick the data directory and
the profile. A bad value raises :class:`ConfigError` naming the field, before anything loads.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent


class ConfigError(ValueError):
    """A setting is missing, unknown or has a value of the wrong type or range."""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    # Refuse every non-loopback socket connection from inside the process.
    airgap: bool = True
    # Seconds a client is told to wait when Hearth is overloaded (Retry-After).
    retry_after_s: int = 2
    # Seconds one SSE write may wait for a slow reader before the stream is dropped (and aborted).
    sse_write_timeout_s: float = 30.0
    # On SIGTERM: seconds requests in flight may take to finish before they are ended (new ones
    # are refused with 503 from the signal on).
    drain_timeout_s: float = 30.0
    # Open mode (no keys): Host names answered ("*": any) and web origins allowed (CORS too).
    allowed_hosts: str = "localhost,127.0.0.1,::1,testclient"
    cors_origins: str = ""
    # Serve with no keys on a non-loopback address (refused otherwise).
    insecure_open: bool = False
    log_level: str = "info"
    # "text" or "json" (one object per line, with the request id; never prompt text).
    log_format: str = "text"


@dataclass(frozen=True)
class LLMSettings:
    model: str = "gemma-3-270m-q4km"
    backend: str = "llamacpp"
    n_threads: int = 2
    # Sequences decoded together in one batch; further requests wait in the queue.
    max_running: int = 8
    # Requests allowed to wait; past this, 503 with Retry-After.
    max_waiting: int = 64
    # Longest prompt + completion one request may use (tokens); at most the card's context.
    max_model_len: int = 8192
    # KV cells shared by all running sequences.
    kv_cells: int = 32768
    # Tokens per llama_decode call (decode tokens first, then prompt chunks).
    batch_tokens: int = 512
    max_n: int = 8
    # Longest a generation may take, queueing included (seconds): the default and the maximum of
    # a request's ``timeout``; past it the request is aborted with 408 and its slot freed.
    request_timeout_s: float = 600.0
    # max_tokens when a chat request gives none (completions default to 16, as OpenAI's do).
    default_max_tokens: int = 1024
    # Reuse the KV of a finished sequence whose tokens prefix a new prompt.
    prefix_cache: bool = True
    # Same seed + prompt + parameters give the same tokens alone or in any batch: one KV stream
    # per sequence (kv_cells is then max_running * max_model_len), one matmul path for every
    # batch size, no flash attention. Off: shared KV cells, faster kernels at large batches.
    batch_invariant: bool = True
    # Prompt-lookup speculative decoding (llama.cpp backend): up to this many tokens drafted per
    # step by matching the sequence's last tokens earlier in its prompt/output, verified in the
    # same batched decode. Off (0) by default: the verifying rows' logits differ from a one-row
    # decode by float rounding, so outputs can diverge from plain decoding (docs/benchmarks.md).
    draft_tokens: int = 0
    # Exact response cache: completed greedy or seeded generations kept per tenant (LRU entries);
    # the same request again is answered without the model. 0 turns it off.
    response_cache_entries: int = 256


@dataclass(frozen=True)
class EmbeddingSettings:
    model: str = "all-minilm-l6-v2"
    n_threads: int = 2
    batch_size: int = 32
    max_inputs: int = 2048
    # "torch" (sentence-transformers, fp32), "onnx-int8" or "onnx-fp32" (ONNX Runtime, exported
    # from the same folder by install-models; docs/ingestion.md has the measurements).
    runtime: str = "torch"


@dataclass(frozen=True)
class StorageSettings:
    # The one DuckDB file, relative to the data directory (an absolute path is kept as is).
    db_file: str = "hearth.duckdb"
    # DuckDB worker threads.
    threads: int = 2


@dataclass(frozen=True)
class RetrievalSettings:
    # A collection switches from exact inner product to HNSW past this many chunks.
    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 200
    hnsw_ef_search: int = 256
    # Reciprocal rank fusion constant of hybrid mode.
    rrf_k: int = 60
    default_top_k: int = 5
    max_top_k: int = 100
    # "auto" uses faiss-gpu when a GPU is visible, "cpu" never does, "gpu" requires one.
    device: str = "auto"
    # RAG: best cosine similarity below which Hearth refuses instead of answering.
    min_score: float = 0.35
    # RAG: token budget of the numbered context blocks and of the replayed conversation.
    context_tokens: int = 1024
    history_tokens: int = 512
    # Collections whose indexes stay in memory (least recently used leave, saved, and are
    # loaded again on use).
    max_open_indexes: int = 64


@dataclass(frozen=True)
class IngestSettings:
    # Word pieces per chunk, special tokens included; never above the embedder's maximum (256).
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    max_file_bytes: int = 20 * 1024 * 1024
    max_pdf_pages: int = 500
    pdf_timeout_s: float = 60.0
    # Address space a PDF's extraction (a killable child process) may add to the server's.
    pdf_memory_mib: int = 1024
    embed_batch: int = 32
    max_documents: int = 10_000


@dataclass(frozen=True)
class VLLMSettings:
    """The vLLM backend (``llm.backend = "vllm"``); see ``configs/gpu.toml`` and docs/gpu.md."""

    dtype: str = "bfloat16"
    # "" = the card's own quantization (fp8, awq, gptq ...), else vLLM's name for one.
    quantization: str = ""
    # Fraction of GPU memory (of a NUMA node's RAM on CPU) vLLM may reserve.
    gpu_memory_utilization: float = 0.85
    # KV cache size on the CPU backend, GiB (VLLM_CPU_KVCACHE_SPACE); unused on GPU.
    cpu_kvcache_gib: int = 2
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    # "" = vLLM's choice (mp on one node); "ray" spans nodes of a running Ray cluster.
    distributed_executor_backend: str = ""
    enforce_eager: bool = False
    # vLLM's structured-output backend: "guidance" runs llguidance, as the llama.cpp path does.
    structured_outputs_backend: str = "guidance"


@dataclass(frozen=True)
class LimitsSettings:
    """Per-tenant defaults (0 = unlimited); the admin API overrides them per tenant or key."""

    requests_per_min: int = 1200
    tokens_per_min: int = 0
    tokens_per_day: int = 0
    concurrent_requests: int = 64
    queued_jobs: int = 16
    stored_bytes: int = 10 * 1024**3
    collections: int = 100
    documents: int = 100_000


@dataclass(frozen=True)
class UsageSettings:
    # Estimated cost in GET /v1/usage: "model=prompt/completion; ..." per million tokens.
    prices: str = ""
    currency: str = "USD"


@dataclass(frozen=True)
class ModelsSettings:
    """The model pool: which generation models stay loaded (engine.runner.ModelPool)."""

    # Seconds a model other than the configured one stays loaded after its last request; a
    # request's "keep_alive" overrides it for that model, up to max_keep_alive_s.
    keep_alive_s: float = 600.0
    max_keep_alive_s: float = 86_400.0
    # Budget for loaded models (file size + KV cache estimate); loading past it unloads the
    # least recently used idle model. 0 = no budget.
    max_resident_bytes: int = 0
    # How long a request waits for room in the budget before a 503 with Retry-After.
    load_wait_s: float = 30.0


@dataclass(frozen=True)
class TasksSettings:
    """Which generation model each task runs on ("" = the server's [llm] model); any installed
    generation card, loaded on first use by the model pool."""

    extract_model: str = ""
    analyze_model: str = ""
    rag_model: str = ""
    classify_model: str = ""


@dataclass(frozen=True)
class AgentsSettings:
    # Hosts ("name" or "name:port", comma-separated) that the http_request tool, webhook tools and
    # result callbacks may call. Empty (the default) = no outbound call at all.
    http_allow_hosts: str = ""
    http_timeout_s: float = 10.0
    http_max_response_bytes: int = 262_144
    # The sql_query tool: rows returned at most, and the time limit of one query.
    sql_max_rows: int = 200
    sql_timeout_s: float = 5.0
    # Conversations: turns kept verbatim (older ones go into the running summary), and how long an
    # idle conversation lives.
    memory_turns: int = 10
    conversation_ttl_s: float = 604_800.0
    # Inbound webhooks: how far the signed timestamp may be from the server's clock.
    webhook_max_skew_s: float = 300.0


@dataclass(frozen=True)
class AuthSettings:
    # Users' access tokens (JWT, HS256) and refresh tokens: lifetimes in seconds. The signing
    # secret is $HEARTH_JWT_SECRET, else <data dir>/jwt.secret (made on first start).
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 2_592_000


@dataclass(frozen=True)
class Settings:
    profile: str = "cpu"
    data_dir: Path = Path("data")
    server: ServerSettings = field(default_factory=ServerSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    usage: UsageSettings = field(default_factory=UsageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    models: ModelsSettings = field(default_factory=ModelsSettings)
    tasks: TasksSettings = field(default_factory=TasksSettings)
    agents: AgentsSettings = field(default_factory=AgentsSettings)
    vllm: VLLMSettings = field(default_factory=VLLMSettings)
    # Where model files live; defaults to <data_dir>/models (HEARTH_MODELS_DIR).
    model_dir: Path | None = None

    @property
    def models_dir(self) -> Path:
        return self.model_dir or self.data_dir / "models"


_SECTIONS: dict[str, type] = {
    f.name: f.type if isinstance(f.type, type) else globals()[f.type]
    for f in dataclasses.fields(Settings)
    if f.name not in ("profile", "data_dir", "model_dir")
}


def profile_path(profile: str) -> Path:
    """A profile name (``cpu``) resolves to this folder's TOML; anything with a slash is a path."""
    path = Path(profile) if ("/" in profile or profile.endswith(".toml")) else None
    path = path or PROFILES_DIR / f"{profile}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))
        raise ConfigError(f"profile {profile!r}: no file {path}; known profiles: {known}")
    return path


def load_settings(
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, object]] | None = None,
    data_dir: str | Path | None = None,
) -> Settings:
    """Build settings: defaults < profile < environment < explicit overrides (CLI flags)."""
    env = os.environ if env is None else env
    profile = profile or env.get("HEARTH_PROFILE") or "cpu"
    raw = tomllib.loads(profile_path(profile).read_text())
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"profile {profile!r}: unknown section(s) {sorted(unknown)}")
    sections: dict[str, object] = {}
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name, {}))
        values.update(_from_env(name, cls, env))
        values.update((overrides or {}).get(name, {}))
        sections[name] = _build(name, cls, values)
    root = Path(data_dir or env.get("HEARTH_DATA_DIR") or "data")
    models = env.get("HEARTH_MODELS_DIR")
    return Settings(
        profile=profile,
        data_dir=root,
        model_dir=Path(models) if models else None,
        **sections,  # type: ignore[arg-type]
    )


def env_name(section: str, field_name: str) -> str:
    prefix = "HEARTH_" if section == "server" else f"HEARTH_{section.upper()}_"
    return prefix + field_name.upper()


def _from_env(section: str, cls: type, env: Mapping[str, str]) -> dict[str, str]:
    found = {}
    for f in dataclasses.fields(cls):
        name = env_name(section, f.name)
        if name in env:
            found[f.name] = env[name]
    return found


def _build(section: str, cls: type, values: dict[str, object]):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(
            f"[{section}] unknown setting(s) {sorted(unknown)}; known: {sorted(names)}"
        )
    kwargs = {k: _coerce(f"{section}.{k}", hints[k], v) for k, v in values.items()}
    built = cls(**kwargs)
    _check_ranges(section, built)
    return built


def _coerce(name: str, kind: object, value: object) -> object:
    if isinstance(kind, types.UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(str(value).replace("_", ""))
        if kind is float:
            return float(value)  # type: ignore[arg-type]
        if kind is str:
            if not isinstance(value, str | int | float):
                raise ValueError(value)
            return str(value)
        if kind is Path:
            return Path(str(value))
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind.__name__}") from None  # type: ignore[union-attr]
    return value


_CHOICES = {("embeddings", "runtime"): ("torch", "onnx-int8", "onnx-fp32")}


def _check_ranges(section: str, built: object) -> None:
    for (sec, name), allowed in _CHOICES.items():
        if sec == section and getattr(built, name) not in allowed:
            raise ConfigError(
                f"setting {section}.{name}: {getattr(built, name)!r} is not one of {list(allowed)}"
            )
    for f in dataclasses.fields(built):  # type: ignore[arg-type]
        value = getattr(built, f.name)
        if isinstance(value, int) and not isinstance(value, bool):
            zero_ok = ("port", "draft_tokens", "response_cache_entries", "max_resident_bytes")
            low = 0 if f.name in zero_ok or section == "limits" else 1
            if f.name in ("port",) and not 0 <= value <= 65535:
                raise ConfigError(f"setting {section}.{f.name}: {value} is not a TCP port")
            if value < low:
                raise ConfigError(f"setting {section}.{f.name}: {value} must be >= {low}")
