"""One typed settings tree for MedQ.

Sources, highest priority first:

1. keyword arguments to :func:`load_settings` (used by the CLI and tests),
2. ``MEDQ_*`` environment variables, nested with ``__`` (``MEDQ_OBJECTS__BACKEND=s3``),
3. ``medq.yaml`` in the workspace folder (``MEDQ_WORKSPACE`` or ``.medq/``),
4. the embedded defaults below (everything local, no services needed).

Switching the object store to S3/MinIO or Label Studio / Prefect to remote servers is a settings
change only. Secrets are :class:`pydantic.SecretStr`: they print as ``**********``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from medq.errors import MedQError

DEFAULT_WORKSPACE = Path(".medq")
CONFIG_FILE = "medq.yaml"


class SettingsError(MedQError, ValueError):
    """`medq.yaml`, a `MEDQ_*` variable or an argument holds an invalid setting."""


class CatalogSettings(BaseModel):
    """DuckDB catalog: every record of every round."""

    path: Path = Field(Path("catalog.duckdb"), description="Relative paths are under the workspace.")
    lock_timeout_s: float = Field(0.0, ge=0, description="How long to wait for another process' lock.")


class ObjectStoreSettings(BaseModel):
    """Where images, thumbnails, model weights and index files live."""

    backend: str = Field("local", description="Object store backend: local | s3.")
    local_root: Path = Path("objects")
    local_fsync: bool = Field(False, description="fsync every local object (power-cut durability; "
                              "writes are atomic either way).")
    s3_endpoint: str = Field("127.0.0.1:9000", description="host:port of MinIO or any S3 endpoint.")
    s3_bucket: str = "medq"
    s3_access_key: SecretStr = SecretStr("")
    s3_secret_key: SecretStr = SecretStr("")
    s3_region: str = "us-east-1"
    s3_secure: bool = False
    presign_expiry_s: int = Field(7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    # A dead endpoint must fail fast with one clear error, not hang for minutes.
    s3_connect_timeout_s: float = Field(3.0, gt=0, description="TCP connect timeout per try.")
    s3_read_timeout_s: float = Field(120.0, gt=0, description="Socket read timeout.")
    s3_retries: int = Field(2, ge=0, le=10, description="Retries of a failed request.")
    s3_part_size_mb: int = Field(16, ge=5, le=5120, description="Multipart part size (MiB).")


class IndexSettings(BaseModel):
    """FAISS pool index."""

    local_root: Path = Path("index")
    kind: Literal["auto", "flat", "ivf", "ivfpq", "hnsw"] = Field(
        "auto", description="auto: flat up to exact_max, IVF / IVF-PQ above (by pool size).")
    exact_max: int = Field(50_000, ge=1, description="Pools up to this size use exact search.")
    pq_min: int = Field(500_000, ge=1, description="Pools from this size use IVF-PQ under `auto`.")
    nprobe: int = Field(16, ge=1)
    use_gpu: bool = Field(True, description="Use faiss GPU resources when faiss has them.")
    recall_sample: int = Field(200, ge=10, description="Queries used to check recall vs exact.")
    recall_k: int = Field(10, ge=1, description="k of the recall@k check.")
    nlist: int | None = Field(None, ge=1, description="IVF lists (None: about 4 x sqrt(pool size)).")
    train_size: int = Field(200_000, ge=1000, description="Most vectors used to train IVF/PQ.")
    pq_m: int | None = Field(None, ge=1, description="IVF-PQ sub-quantizers, must divide the "
                             "dimension (None: dim / 4, 16 bytes per 64-d vector).")
    pq_nbits: int = Field(8, ge=4, le=12)
    pq_rerank: int = Field(8, ge=1, description="IVF-PQ: fetch k x this and re-rank exactly (1 = off).")
    hnsw_m: int = Field(32, ge=4)
    hnsw_ef_construction: int = Field(40, ge=8)
    hnsw_ef_search: int = Field(64, ge=8)


class EmbedderSettings(BaseModel):
    name: str = Field("quality", description="quality (CPU, no weights) | timm | open_clip")
    weights_path: Path | None = None
    image_size: int = Field(128, ge=32)
    model_name: str | None = Field(None, description="Architecture for timm / open_clip (e.g. ViT-B-32).")
    device: str = Field("auto", description="auto | cpu | cuda (pretrained encoders only).")
    dims: int | None = Field(64, ge=2, description="PCA output dimension (None: no PCA).")
    whiten: bool = Field(False, description="Whiten PCA components.")
    batch_size: int = Field(256, ge=1, description="Images embedded per batch.")
    fit_sample: int = Field(2000, ge=16, description="Reference images used to fit the embedder.")
    group_weights: dict[str, float] | None = Field(
        None, description="Quality feature group multipliers (None: content down-weighted to 0.5).")


class ModelSettings(BaseModel):
    """The model the loop improves."""

    backend: str = Field("lite", description="lite | hf | vllm")
    hf_path: Path | None = Field(None, description="Local folder of a transformers MLLM.")
    vllm_endpoint: str | None = Field(None, description="OpenAI-compatible base URL of `vllm serve`.")
    vllm_model: str | None = None
    vllm_api_key: SecretStr = Field(SecretStr(""), description="Bearer key of `vllm serve --api-key`"
                                    " (empty: none). Never saved with a model version.")
    device: str = Field("auto", description="auto | cpu | cuda")
    seed: int = 0
    lite_epochs: int = Field(30, ge=1)
    lora_rank: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    max_steps: int = Field(200, ge=1)


class JudgeSettings(BaseModel):
    """Description judge: offline rules or an LLM behind an OpenAI-compatible endpoint."""

    kind: Literal["rules", "openai"] = Field("rules", description="rules: the rule-based judge; "
                                             "openai: an OpenAI-compatible endpoint.")
    endpoint: str | None = None
    model: str = "gpt-4o"
    api_key: SecretStr = SecretStr("")
    retries: int = Field(3, ge=0, description="Retries of a failed request (the openai SDK's "
                         "backoff: 0.5 s doubling, at most 8 s, Retry-After honoured); also how "
                         "often an unparseable reply is asked again.")
    backoff_s: float = Field(1.0, ge=0, description="First wait before asking an unparseable "
                             "reply again; doubles each time.")
    timeout_s: float = Field(60.0, gt=0, description="Per request.")
    max_workers: int = Field(4, ge=1, description="Concurrent judge requests.")


class LaneSettings(BaseModel):
    """Annotation lanes and their costs in cost units per item."""

    expert_cost: float = Field(1.0, gt=0)
    verify_cost: float = Field(0.3, gt=0)
    auto_cost: float = Field(0.0, ge=0)
    expert_entropy: float = Field(0.6, ge=0, le=1, description="Normalized entropy at or above -> expert.")
    auto_entropy: float = Field(0.25, ge=0, le=1, description="Normalized entropy below -> auto.")
    spot_check_rate: float = Field(0.1, ge=0, le=1)
    spot_check_max_disagreement: float = Field(0.2, ge=0, le=1)
    confidently_wrong_distance: float = Field(1.25, ge=0, description=(
        "Low-entropy candidates within this multiple of a failure prototype's radius never go to auto "
        "(measured: same-mode pool images sit at 0.5-1.4 x the radius, other modes beyond 1.8 x)."))
    expert_order: Literal["entropy", "prototype", "retrieval"] = Field("retrieval", description=(
        "Which human-lane items the round budget funds first: 'entropy' = expert lane by "
        "descending entropy, then verify; 'prototype' = expert and verify items in one sequence "
        "apportioned over the failure prototypes by error mass, most uncertain first within each; "
        "'retrieval' = apportioned the same way, nearest to the failure anchors first within each "
        "(see engine/route.py and benchmarks/README.md)."))

    @model_validator(mode="after")
    def _ordered(self) -> "LaneSettings":
        if self.auto_entropy > self.expert_entropy:
            raise ValueError("lanes.auto_entropy must be <= lanes.expert_entropy")
        return self


class LoopSettings(BaseModel):
    """Defaults for `engine_loop`; each is also a flow parameter."""

    rounds: int = Field(3, ge=1)
    budget_per_round: float = Field(150.0, gt=0, description="Cost units per round.")
    total_budget: float | None = Field(None, gt=0)
    target_accuracy: float | None = Field(None, gt=0, le=1)
    plateau_rounds: int = Field(2, ge=1)
    promotion_margin: float = Field(0.005, ge=0, description="Accuracy gain needed to promote.")
    candidates_per_round: int = Field(600, ge=1, description="Retrieved items scored per round.")
    anchors_per_prototype: int = Field(3, ge=1)
    min_cluster_size: int = Field(5, ge=2)
    reduce_dims: int = Field(8, ge=2)
    near_duplicate_distance: float = Field(1e-3, ge=0)
    noise_weight: float = Field(0.5, ge=0, description="Budget weight of the residual noise prototype.")
    diversity: float = Field(0.3, ge=0, le=1, description="MMR trade-off: 0 = nearest first.")
    description_fail_below: float = Field(4.0, ge=0, le=8, description="Description score (0-8) below = failure.")


class CurationSettings(BaseModel):
    """Great Expectations suite on each round's new training rows (engine/curate.py)."""

    max_class_share: float = Field(0.9, gt=0, le=1, description=(
        "No verdict above this share of a batch (failure-driven batches are skewed by design)."))
    balance_min_rows: int = Field(20, ge=1, description="Class balance is checked from this batch size.")
    max_quarantine_share: float = Field(0.5, ge=0, le=1, description="More quarantined rows fail the round.")
    min_rows: int = Field(1, ge=0)
    near_duplicate_distance: float | None = Field(
        None, ge=0, description="Embedding distance to an eval item below which a row leaks (None: loop's).")
    max_training_items: int | None = Field(None, ge=1, description="Cap of the mixed training set.")


class AnnotationSettings(BaseModel):
    backend: str = Field("simulated", description="simulated | labelstudio | oracle:LABELS.jsonl")
    error_rate: float = Field(0.05, ge=0, le=1)
    consensus: int = Field(1, ge=1, description="Annotators per expert-lane item.")
    disagreement_rule: Literal["majority", "escalate", "strictest"] = Field(
        "majority", description="How expert votes that disagree are resolved.")
    wait_timeout_s: float = Field(600.0, gt=0)
    poll_interval_s: float = Field(2.0, gt=0)
    batch_size: int = Field(200, ge=1)


# Development token of the local server started by infra/labelstudio.sh (same default there).
LABELSTUDIO_DEV_TOKEN = "medq0dev0token0000000000000000000000000a"


class LabelStudioSettings(BaseModel):
    """Label Studio server and how MedQ uses it (see storage/labelstudio/)."""

    url: str = "http://127.0.0.1:8080"
    token: SecretStr = Field(SecretStr(LABELSTUDIO_DEV_TOKEN),
                             description="Legacy API token (Account & Settings > Access Token).")
    project_title: str = Field("MedQ", description="Projects are '<title> · <lane>'.")
    image_access: Literal["auto", "local-files", "presigned", "data-uri"] = Field(
        "auto", description="auto: local-files for a local object store, presigned for S3.")
    local_files_root: Path | None = Field(None, description="LOCAL_FILES_DOCUMENT_ROOT of the "
                                          "server (None: /, the default of infra/labelstudio.sh).")
    timeout_s: float = Field(30.0, gt=0, description="Per request.")
    retries: int = Field(4, ge=0, description="Retries of a failed request (server down, 5xx).")
    backoff_s: float = Field(0.5, ge=0, description="First wait before a retry; doubles each time.")
    backoff_max_s: float = Field(8.0, ge=0)
    import_chunk: int = Field(1000, ge=1, description="Tasks per import request.")
    page_size: int = Field(1000, ge=1, description="Tasks per page when pulling.")
    simulated_annotators: int = Field(0, ge=0, description="Start this many simulated annotators "
                                      "(own users, real API, answers from oracle labels) after "
                                      "each submit: demos and CI without people.")
    simulated_delay_s: float = Field(0.0, ge=0, description="Mean seconds a simulated annotator "
                                     "spends per task.")


class PrefectSettings(BaseModel):
    api_url: str | None = Field(None, description="Remote Prefect API; None = temporary local server.")
    home: Path = Path("prefect")


class DashboardSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    cache_ttl_s: float = Field(10.0, gt=0, description="How long the dashboard reuses a query "
                               "result (a catalog write invalidates it sooner).")
    sample_efficiency_json: Path | None = Field(
        None, description="Benchmark curves to show; None: benchmarks/results/"
        "sample_efficiency.json under the workspace, the current folder or the repository.")


class ServicesSettings(BaseModel):
    """Local services started by `medq services up` (see infra/)."""

    dir: Path | None = Field(None, description="Pid files, logs and data of the local services. "
                             "None: $MEDQ_SERVICES_DIR, else <repo>/.services.")
    s3_port: int = Field(9000, ge=1, le=65535)
    labelstudio_port: int = Field(8080, ge=1, le=65535)
    prefect_port: int = Field(4200, ge=1, le=65535)
    labelstudio_venv: Path = Path("services/labelstudio-venv")
    labelstudio_admin: str = "admin@medq.local"
    labelstudio_password: SecretStr = SecretStr("medq-admin-pw")


class IngestSettings(BaseModel):
    """File ingest (`medq ingest`, world loading): decoding limits and normalization."""

    nifti_axis: int = Field(2, ge=0, le=2, description="Volume axis NIfTI slices are taken along.")
    nifti_slices: int = Field(5, ge=1, description="Slices per volume, evenly spaced over its "
                              "non-empty slices.")
    max_frames: int = Field(16, ge=1, description="Frames/pages kept per multi-frame DICOM or "
                            "TIFF (evenly spaced).")
    max_pixels: int = Field(100_000_000, ge=1, description="Pixels per frame above which a file "
                            "is treated as a decompression bomb.")
    max_file_bytes: int = Field(2 * 1024**3, ge=1, description="Larger files (or decompressed "
                                "NIfTI) are quarantined.")
    min_side: int = Field(8, ge=1, description="Images with a side shorter than this (px) are "
                          "quarantined.")
    bits: int = Field(8, description="Stored PNG depth for grayscale: 8 or 16.")
    thumb_size: int = Field(128, ge=16, description="Longer side of thumbnails (px).")
    batch_size: int = Field(64, ge=1, description="Files per catalog transaction.")
    strict_extensions: bool = Field(True, description="Quarantine files whose content is another "
                                    "image format than their extension says.")
    deid_salt: SecretStr = Field(SecretStr(""), description="Salt of hashed DICOM UIDs; empty: a "
                                 "random salt kept in <workspace>/deid_salt.")
    source_refs: Literal["pseudonymized", "path"] = Field(
        "pseudonymized", description="What images.source_uri and image metadata record of an "
        "ingested file: 'pseudonymized' = ingest:<keyed hash of the source root>/<keyed hash of "
        "the relative path><extension>, keyed with deid_salt (folder and file names often carry "
        "patient names/IDs); 'path' = the absolute path or s3 URI. Quarantine always names the "
        "real path.")

    @field_validator("bits")
    @classmethod
    def _bits(cls, v: int) -> int:
        if v not in (8, 16):
            raise ValueError("ingest.bits must be 8 or 16")
        return v


class _YamlSource(PydanticBaseSettingsSource):
    """Reads `medq.yaml` from the workspace; a broken file is a clear error."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = yaml.safe_load(self.path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{self.path}: not valid YAML: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{self.path}: cannot be read: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"{self.path}: expected a mapping at the top level")
        return data


class Settings(BaseSettings):
    """The whole MedQ configuration. Paths in sub-trees are relative to `workspace`."""

    model_config = SettingsConfigDict(env_prefix="MEDQ_", env_nested_delimiter="__", extra="forbid")

    workspace: Path = DEFAULT_WORKSPACE
    catalog: CatalogSettings = CatalogSettings()
    objects: ObjectStoreSettings = ObjectStoreSettings()
    index: IndexSettings = IndexSettings()
    embedder: EmbedderSettings = EmbedderSettings()
    model: ModelSettings = ModelSettings()
    judge: JudgeSettings = JudgeSettings()
    lanes: LaneSettings = LaneSettings()
    loop: LoopSettings = LoopSettings()
    curation: CurationSettings = CurationSettings()
    annotation: AnnotationSettings = AnnotationSettings()
    labelstudio: LabelStudioSettings = LabelStudioSettings()
    prefect: PrefectSettings = PrefectSettings()
    dashboard: DashboardSettings = DashboardSettings()
    services: ServicesSettings = ServicesSettings()
    ingest: IngestSettings = IngestSettings()

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        workspace = Path(os.environ.get("MEDQ_WORKSPACE", DEFAULT_WORKSPACE))
        init_ws = init_settings.init_kwargs.get("workspace")
        if init_ws is not None:
            workspace = Path(init_ws)
        yaml_source = _YamlSource(settings_cls, workspace / CONFIG_FILE)
        return (init_settings, env_settings, yaml_source, file_secret_settings)

    def resolve(self, path: Path | None) -> Path | None:
        """A settings path made absolute against the workspace."""
        if path is None:
            return None
        path = Path(path).expanduser()
        return path if path.is_absolute() else self.workspace / path

    @property
    def catalog_path(self) -> Path:
        return self.resolve(self.catalog.path)

    @property
    def objects_root(self) -> Path:
        return self.resolve(self.objects.local_root)

    @property
    def index_root(self) -> Path:
        return self.resolve(self.index.local_root)

    def public_dict(self) -> dict[str, Any]:
        """Settings as JSON-safe data with every secret masked (safe to print or log)."""
        return self.model_dump(mode="json")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings tree (see module docstring for the order of sources).

    Raises :class:`SettingsError` naming each bad setting; input values are never echoed (they
    may be secrets)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                             for err in exc.errors(include_input=False, include_url=False))
        workspace = Path(overrides.get("workspace") or os.environ.get("MEDQ_WORKSPACE")
                         or DEFAULT_WORKSPACE)
        raise SettingsError(f"invalid MedQ settings (from arguments, MEDQ_* variables or "
                            f"{workspace / CONFIG_FILE}): {problems}") from None
