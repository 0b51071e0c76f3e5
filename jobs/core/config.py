"""The one typed configuration shared by DAGs and jobs.

The pipeline reads ``include/config/pipeline.yaml`` (or the file named by ``RECSYS_CONFIG``),
takes its ``defaults`` block, deep-merges the block of the active profile over it
(``RECSYS_PROFILE``, default ``local``) and then applies environment overrides of the form
``RECSYS__SECTION__KEY=value`` (values are parsed as YAML scalars, so ``8`` is an int and
``true`` a bool). The result is validated by the pydantic model below; an unknown key or a bad
value fails at once with a message that names the dotted key.

Loading has no side effects: no folder is created and no client is configured.
"""

from __future__ import annotations

import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, ValidationError, field_validator, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_PATH = REPO_ROOT / "include" / "config" / "pipeline.yaml"
ENV_PREFIX = "RECSYS__"
ZONES = (
    "landing",
    "curated",
    "quarantine",
    "training",
    "recommendations",
    "rescored",
    "reports",
    "ground_truth",
    "checkpoints",
    "ledger",
)


class ConfigError(ValueError):
    """The configuration file, profile or an override is invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Section):
    root: str = Field(description="Folder or s3://bucket/prefix holding every data zone.")

    def root_path(self) -> str:
        """Absolute root: relative local paths are resolved against the repository root."""
        if "://" in self.root:
            return self.root.rstrip("/")
        path = Path(self.root)
        return str(path if path.is_absolute() else (REPO_ROOT / path))

    def zone(self, name: str) -> str:
        if name not in ZONES:
            raise ConfigError(f"unknown data zone {name!r}; known zones: {', '.join(ZONES)}")
        sub = {
            "landing": "landing/events",
            "curated": "curated/events",
            "quarantine": "quarantine/events",
            "training": "training/snapshots",
        }.get(name, name)
        return f"{self.root_path()}/{sub}"

    def partition(self, name: str, day: date | str) -> str:
        return f"{self.zone(name)}/dt={day if isinstance(day, str) else day.isoformat()}"

    @property
    def is_local(self) -> bool:
        return "://" not in self.root or self.root.startswith("file://")


class SparkConfig(_Section):
    """Spark as a service: every job is a Spark Connect client of ``remote``.

    ``master``, ``server_memory`` and ``server_conf`` describe the Connect server that the
    local stack (and the loopback cluster rehearsal) runs; a cluster runs its own server and
    only ``remote`` matters there. ``conf`` holds the SQL confs each job's session sets.
    """

    remote: str = Field("sc://127.0.0.1:15002", description="Spark Connect endpoint, sc://host:port")
    master: str = "local[2]"
    app_name: str = Field("recsys", description="Spark application name; jobs tag their sessions <app_name>-<stage>.")
    server_memory: str = "3g"
    shuffle_partitions: int = Field(
        4, ge=1, le=100_000, description="spark.sql.shuffle.partitions of each job's session."
    )
    connect_retries: int = Field(3, ge=0, le=30)
    conf: dict[str, str] = Field(default_factory=dict)
    server_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("remote")
    @classmethod
    def _remote(cls, value: str) -> str:
        if not value.startswith("sc://") or len(value) <= len("sc://"):
            raise ValueError(f"{value!r} is not a Spark Connect endpoint (sc://host:port)")
        return value


class MlflowConfig(_Section):
    tracking_uri: str = Field(description="MLflow tracking server every job logs to (also the model registry).")
    experiment: str = Field(
        "recsys", description="MLflow experiment of training and evaluation runs (monitoring adds -monitoring)."
    )
    model_name: str = Field(
        "recsys-mf",
        description="Registered model name; its aliases champion / challenger / previous_champion are the registry state.",
    )
    ui_url: str | None = Field(None, description="Public address of the MLflow UI for links (default: tracking_uri).")

    @property
    def public_url(self) -> str:
        return (self.ui_url or self.tracking_uri).rstrip("/")


class IngestConfig(_Section):
    landing_format: Literal["jsonl", "csv"] = Field(
        "jsonl", description="Format of landing files: JSON lines or CSV (compressed or not)."
    )
    wait_timeout_s: int = Field(
        3600, ge=1, description="How long the landing sensor waits for a day's _SUCCESS before the run fails."
    )
    poke_interval_s: int = Field(
        30, ge=1, description="Seconds between the landing sensor's checks (it defers to the triggerer in between)."
    )
    max_quarantine_share: float = Field(0.05, ge=0.0, le=1.0)
    min_rows: int = Field(1, ge=0, description="Absolute floor of a non-empty day's row count.")
    recent_days: int = Field(
        28, ge=1, le=90, description="Days of observed row counts (refused days included) the volume rule looks back."
    )
    min_ratio_to_recent: float = Field(
        0.3, gt=0.0, description="Narrowest low bound, as a ratio to the recent median (jobs/validate/volume.py)."
    )
    max_ratio_to_recent: float = Field(
        3.0, gt=0.0, description="Narrowest high bound, as a ratio to the recent median (jobs/validate/volume.py)."
    )
    volume_mads: float = Field(
        3.5,
        gt=0.0,
        description="A day may stray this many robust σ (1.4826·MAD) of recent log counts from their median.",
    )
    volume_min_days: int = Field(
        7,
        ge=1,
        le=90,
        description="Observed days the volume rule needs before it bounds a day relative to them "
        "(fewer: only the absolute floor min_rows; a bursty source declares a longer learning period).",
    )
    empty_day: Literal["pass", "fail"] = Field(
        "fail", description="Verdict on a day with no events: pass (a sparse log) or fail (a live stream: an outage)."
    )

    @model_validator(mode="after")
    def _ratios_ordered(self) -> IngestConfig:
        if self.min_ratio_to_recent >= self.max_ratio_to_recent:
            raise ValueError("min_ratio_to_recent must be below max_ratio_to_recent")
        return self


class Toleration(_Section):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Resources(_Section):
    cpu: str
    memory: str


class TrainingConfig(_Section):
    launcher: Literal["local", "kubernetes"] = Field(
        "local", description="Where training runs: local subprocess, or a KubernetesPodOperator pod."
    )
    image: str = Field("ghcr.io/recsys/trainer:latest", description="Training image of the pod (Dockerfile.train).")
    namespace: str = Field("recsys", description="Kubernetes namespace of the training pods.")
    service_account: str = Field("recsys-trainer", description="Service account of the training pods.")
    gpus: int = Field(
        0,
        ge=0,
        le=16,
        description="GPUs requested per training pod (nvidia.com/gpu); > 1 runs torchrun with one rank per GPU.",
    )
    requests: Resources = Field(Resources(cpu="2", memory="8Gi"), description="CPU/memory requests of a training pod.")
    limits: Resources = Field(Resources(cpu="8", memory="32Gi"), description="CPU/memory limits of a training pod.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node selector of a training pod (e.g. a GPU product label)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Tolerations of a training pod (e.g. for tainted GPU nodes)."
    )
    pool: str = Field("gpu_training", description="Airflow pool that bounds concurrent training tasks.")
    pool_slots: int = Field(1, ge=1, description="Pool slots one training task takes.")
    startup_timeout_s: int = Field(
        900,
        ge=30,
        description="Seconds a training pod may take to start (image pull, scheduling) before the try fails.",
    )
    mlflow_secret: str = Field(
        "recsys-mlflow",
        description="Kubernetes Secret with the MLflow credentials mounted into a training pod (its name, not a value).",
    )
    scratch_size: str = Field(
        "20Gi", description="Size of the pod's scratch volume (checkpoints, downloaded snapshot)."
    )
    window_days: int = Field(
        7, ge=2, le=365, description="Days of validated history before the held-out day that a snapshot trains on."
    )
    snapshot_collect_max_pairs: int = Field(
        500_000,
        ge=0,
        le=50_000_000,
        description="A snapshot of at most this many train pairs is split in the job's process (jobs.snapshot.tables:"
        " the same files, fewer Spark jobs); above it Spark builds it without collecting the pairs. 0: always Spark.",
    )
    epochs: int = Field(20, ge=1, le=1000, description="Epochs of the epoch-trained families (MF, sequential).")
    batch_size: int = Field(4096, ge=1, le=10_000_000, description="Training batch size (interactions per step).")
    factors: int = Field(64, ge=2, le=4096, description="Embedding size of the MF and sequential families.")
    learning_rate: float = Field(
        0.005, gt=0.0, le=10.0, description="Learning rate of the epoch-trained families (MF: Adam; sequential: AdamW)."
    )
    weight_decay: float = Field(1e-2, ge=0.0, description="Weight decay (L2) of the epoch-trained families.")
    loss: Literal["bpr", "softmax"] = Field(
        "softmax", description="MF loss: BPR, or sampled softmax over the negatives."
    )
    negatives: int = Field(8, ge=1, le=4096, description="MF: uniform negatives per positive.")
    seed: int = Field(
        42, description="Seed of training (sampling, initialisation): the same seed on CPU gives the same model."
    )
    ease_l2: float = Field(500.0, gt=0.0, description="EASE's L2 penalty λ (jobs.ease).")
    ease_recent_weights: list[NonNegativeFloat] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0, 4.0],
        min_length=1,
        description="Candidate weights α of EASE's recency prior (jobs.ease.model.recency_bias), one chosen per run "
        "on the window's last days (choose_recent_weight); one value: fixed; [0]: plain EASE.",
    )
    ease_recent_days: int = Field(14, ge=1, description="The recency prior's window: the last N train days.")
    ease_recent_valid_days: int = Field(
        7, ge=1, description="The days α of the recency prior is chosen on: the window's last N (at most half of it)."
    )
    families: list[str] = Field(
        default_factory=lambda: ["mf", "ease"],
        min_length=1,
        description="Model families recsys_train trains by default (its families parameter's default) and lets "
        "compete for one champion, in tie-break order (known: mf, ease, seq; recsys_airflow.factory.FAMILIES).",
    )

    optional_families: list[str] = Field(
        default_factory=lambda: ["seq"],
        description="Families recsys_train also builds but trains only when a run's families parameter names "
        "them (trigger form, REST conf): not on the schedule nor on the monitor's retraining. One also in "
        "training.families is simply trained by default.",
    )

    @property
    def built_families(self) -> list[str]:
        """What recsys_train builds: ``families`` then the optional ones not already among them."""
        return [*self.families, *(f for f in self.optional_families if f not in self.families)]

    @field_validator("families", "optional_families")
    @classmethod
    def _unique_families(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(v.isidentifier() for v in value):
            raise ValueError(f"families must be distinct identifiers, got {value}")
        return value


class GateConfig(_Section):
    """The evaluation gate (``jobs/evaluate/gate.py``): evidence, baselines and margins."""

    k: int = Field(10, ge=1, le=1000, description="Cut-off of the gate's ranking metrics (NDCG@k, recall@k).")
    min_recall: float = Field(
        0.02, ge=0.0, le=1.0, description="Floor on the challenger's Recall@K pooled over the evidence."
    )
    min_users: int = Field(
        100,
        ge=1,
        description="Fewest (day, user) pairs of the held-out and replay days the gate decides on; "
        "fewer: not blessed, 'insufficient evidence'.",
    )
    recent_days: int = Field(
        3, ge=1, le=365, description="Recent popularity baseline: item popularity over the window's last N days."
    )
    baseline_margin: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Blessed when the 95% CI lower bound of NDCG@K challenger − best baseline (popularity, "
        "recent popularity) is > −margin (0: the challenger must beat it).",
    )
    require_approval: bool = Field(
        False, description="A person approves each blessed version before promotion (Airflow HITL)."
    )
    replay_days: int = Field(
        0, ge=0, le=30, description="Validated days after the held-out day pooled into the evidence (0: none)."
    )
    replay_tolerance: float = Field(
        0.02,
        ge=0.0,
        le=1.0,
        description="Non-inferiority margin vs the champion: the 95% CI lower bound of NDCG@K "
        "challenger − champion must be ≥ −this.",
    )
    replay_bootstrap: int = Field(1000, ge=100, le=100_000, description="Bootstrap resamples per interval (seeded).")

    @model_validator(mode="before")
    @classmethod
    def _replaced_rules(cls, data: Any) -> Any:
        replaced = {
            "min_lift_over_popularity": "baseline_margin (a paired interval over enough users)",
            "max_regression_vs_champion": "replay_tolerance (a paired interval against the champion)",
        }
        for key, by in replaced.items():
            if isinstance(data, dict) and key in data:
                raise ValueError(f"gate.{key} was replaced by gate.{by}: remove it")
        return data


class ScoringConfig(_Section):
    k: int = Field(20, ge=1, le=1000, description="Recommendations per user.")
    batch_users: int = Field(4096, ge=1, description="Users scored per matrix product in a scoring worker.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    exclusion_days: int = Field(60, ge=1, le=3650)
    rows_per_file: int = Field(2_000_000, ge=1)


class DriftConfig(_Section):
    """Thresholds of the drift monitor (``jobs/drift.py``; the YAML explains each)."""

    psi_warn: float = Field(0.1, gt=0.0)
    psi_alert: float = Field(0.25, gt=0.0)
    js_threshold: float = Field(0.1, gt=0.0, le=1.0)
    unseen_share_warn: float = Field(0.05, gt=0.0, le=1.0)
    unseen_share_alert: float = Field(0.1, gt=0.0, le=1.0)
    min_samples: int = Field(100, ge=1)
    min_drifted_features: int = Field(2, ge=1)
    performance_decay: float = Field(0.3, gt=0.0, lt=1.0)
    min_performance_users: int = Field(
        50,
        ge=1,
        description="Below this many served users with an outcome, the monitor's online performance is not judged.",
    )
    cooldown_hours: float = Field(24.0, ge=0.0)
    trend_days: int = Field(14, ge=1, le=365)

    @model_validator(mode="after")
    def _ordered(self) -> DriftConfig:
        if self.psi_warn > self.psi_alert:
            raise ValueError("psi_warn must not exceed psi_alert")
        if self.unseen_share_warn > self.unseen_share_alert:
            raise ValueError("unseen_share_warn must not exceed unseen_share_alert")
        return self


class WorldConfig(_Section):
    """Size of the synthetic world that ``make demo`` generates."""

    start_date: date = Field(date(2026, 1, 1), description="First day of the synthetic world (jobs.sim).")
    days: int = Field(7, ge=1, le=3650, description="Days the synthetic world generates.")
    users: int = Field(2000, ge=1, description="Users of the synthetic world.")
    items: int = Field(500, ge=1, description="Items of the synthetic world.")
    events_per_day: int = Field(20000, ge=0, description="Events a day of the synthetic world.")
    factors: int = Field(
        8, ge=1, le=256, description="Latent factors of the synthetic world's ground-truth preferences."
    )
    seed: int = Field(7, description="Seed of the synthetic world: the same seed writes the same bytes.")


class AirflowConfig(_Section):
    api_url: str = Field(
        "http://127.0.0.1:28080", description="Airflow REST API base URL (scripts, the REST client, links)."
    )
    owner: str = Field("recsys", description="Owner of every DAG and task (shown in the UI).")
    retry_delay_s: int = Field(
        30, ge=1, le=3600, description="First retry delay of every task (doubling, capped at 10 min)."
    )
    late_ingest_after_hours: float = Field(
        6.0,
        ge=0,
        le=24 * 14,
        description="Alert (Deadline) when a day's ingestion has not succeeded this long after the day closed.",
    )


class StackConfig(_Section):
    """The local stack's shape (``scripts/stack.py``, ``make up``): where its state lives, which
    metadata DB, executor, Spark and object store, on which loopback ports. Only the supervisor
    reads it; a real cluster has its own services. The ``cluster`` profile's section is the
    loopback rehearsal of that profile (``make rehearsal``)."""

    state_dir: str = Field(
        "", description="State folder (Airflow home, MLflow store, logs, PID files); empty: .local/ in the repository."
    )
    db: Literal["sqlite", "postgres"] = Field(
        "sqlite", description="Airflow's metadata DB and MLflow's backend store: SQLite files, or PostgreSQL (pg_url)."
    )
    executor: Literal["local", "celery"] = Field(
        "local", description="Airflow executor: LocalExecutor, or CeleryExecutor through Redis (needs db postgres)."
    )
    spark_cluster: Literal["local", "standalone"] = Field(
        "local", description="The Spark Connect server's master: local[N], or a standalone Master with two Workers."
    )
    object_store: Literal["", "s3"] = Field(
        "", description="'s3': run an S3-compatible server (moto) as a component; empty: none."
    )
    mlflow_artifacts: str = Field(
        "", description="MLflow's --artifacts-destination (e.g. s3://bucket/mlflow); empty: the state folder."
    )
    airflow_port: int = Field(28080, ge=1, le=65535, description="Airflow api-server (UI and REST) port.")
    mlflow_port: int = Field(25000, ge=1, le=65535, description="MLflow tracking server port.")
    spark_connect_port: int = Field(15002, ge=1, le=65535, description="Spark Connect server port.")
    spark_ui_port: int = Field(14040, ge=1, le=65535, description="Spark UI / REST API port of the Connect server.")
    spark_master_port: int = Field(
        17077, ge=1, le=65535, description="Standalone Master RPC port (web UI +1000; Workers +1001, +1002)."
    )
    s3_port: int = Field(19000, ge=1, le=65535, description="Port of the stack's own S3 server (object_store s3).")
    s3_endpoint: str = Field(
        "",
        description="The S3 endpoint URL every component and task is given (object_store s3); empty: the stack's own"
        " server, http://127.0.0.1:<s3_port>. Set it to put something between them (a proxy, a load balancer).",
    )
    pg_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432",
        description="PostgreSQL server (db postgres); the stack creates its databases <instance>_airflow/_mlflow.",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379", description="Redis server: Celery broker and result backend (executor celery)."
    )
    redis_db: int | None = Field(
        None, ge=0, le=15, description="Redis DB number; default: derived from the stack's instance name."
    )
    airflow_db: str = Field("", description="Full SQLAlchemy URL of Airflow's metadata DB, overriding db/pg_url.")
    mlflow_db: str = Field("", description="Full SQLAlchemy URL of MLflow's backend store, overriding db/pg_url.")
    extra_dag_folders: list[str] = Field(
        default_factory=list, description="More DAG folders, each a bundle beside dags/ (the test suite's own DAGs)."
    )

    @model_validator(mode="after")
    def _celery_needs_postgres(self) -> StackConfig:
        if self.executor == "celery" and self.db != "postgres":
            raise ValueError("stack.executor celery needs stack.db postgres (the workers share the metadata DB)")
        return self


class LedgerConfig(_Section):
    """Prices that turn the cost ledger's seconds into money (0 = not priced, e.g. a laptop)."""

    cpu_hour_price: float = Field(0.0, ge=0.0, description="price of one CPU-hour (a core for an hour)")
    gpu_hour_price: float = Field(0.0, ge=0.0, description="price of one GPU-hour")
    currency: str = Field("USD", description="Currency of the cost ledger's prices.")


class PipelineConfig(_Section):
    profile: str
    storage: StorageConfig
    spark: SparkConfig = SparkConfig()
    mlflow: MlflowConfig
    ingest: IngestConfig = IngestConfig()
    training: TrainingConfig = TrainingConfig()
    gate: GateConfig = GateConfig()
    scoring: ScoringConfig = ScoringConfig()
    drift: DriftConfig = DriftConfig()
    world: WorldConfig = WorldConfig()
    airflow: AirflowConfig = AirflowConfig()
    ledger: LedgerConfig = LedgerConfig()
    stack: StackConfig = StackConfig()

    @field_validator("profile")
    @classmethod
    def _profile_name(cls, value: str) -> str:
        if not value.isidentifier():
            raise ValueError(f"profile name {value!r} is not an identifier")
        return value


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(keys):
            raise ConfigError(f"environment override {name} has an empty key segment")
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment override {name} conflicts with another override")
        try:
            node[keys[-1]] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"environment override {name}={raw!r} is not a YAML value: {exc}") from exc
    return tree


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    environ: dict[str, str] | None = None,
) -> PipelineConfig:
    """Load, merge and validate the pipeline configuration.

    Args:
        path: YAML file; default ``$RECSYS_CONFIG`` or ``include/config/pipeline.yaml``.
        profile: profile name; default ``$RECSYS_PROFILE`` or ``local``.
        environ: environment used for the profile and ``RECSYS__`` overrides (default os.environ).

    Raises:
        ConfigError: naming the file, the profile and every offending dotted key.
    """
    env = dict(os.environ if environ is None else environ)
    cfg_path = Path(path or env.get("RECSYS_CONFIG") or DEFAULT_CONFIG_PATH)
    profile = profile or env.get("RECSYS_PROFILE") or "local"
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"configuration file not found: {cfg_path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration file {cfg_path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) - {"defaults", "profiles"}:
        raise ConfigError(f"{cfg_path}: top level must hold only 'defaults' and 'profiles'")
    profiles = raw.get("profiles") or {}
    if profile not in profiles:
        raise ConfigError(
            f"{cfg_path}: unknown profile {profile!r} (RECSYS_PROFILE); known profiles: {', '.join(sorted(profiles))}"
        )
    merged = _deep_merge(raw.get("defaults") or {}, profiles[profile] or {})
    merged = _deep_merge(merged, _env_overrides(env))
    merged["profile"] = profile
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, f"{cfg_path}, profile {profile}")) from None


@lru_cache(maxsize=8)
def _cached(path: str, profile: str, env_items: tuple[tuple[str, str], ...]) -> PipelineConfig:
    return load_config(path, profile, dict(env_items))


def get_config() -> PipelineConfig:
    """The configuration for the current environment, cached per (file, profile, overrides)."""
    env = os.environ
    path = env.get("RECSYS_CONFIG") or str(DEFAULT_CONFIG_PATH)
    profile = env.get("RECSYS_PROFILE") or "local"
    items = tuple(sorted((k, v) for k, v in env.items() if k.startswith(ENV_PREFIX)))
    return _cached(path, profile, items)


def main() -> None:
    """``python -m jobs.core.config [--profile P]``: print the resolved configuration as YAML."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--profile")
    parser.add_argument("--get", help="print one dotted key, e.g. storage.root")
    args = parser.parse_args()
    try:
        cfg = load_config(profile=args.profile)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    data = cfg.model_dump(mode="json")
    if args.get:
        for part in args.get.split("."):
            data = data[part]
        print(data if not isinstance(data, dict | list) else yaml.safe_dump(data))
    else:
        print(yaml.safe_dump(data, sort_keys=False))


if __name__ == "__main__":
    main()
