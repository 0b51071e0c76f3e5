"""MLflow access shared by the stages: the client, the registry's aliases, and a model version's files.

MLflow is imported inside the functions: importing it costs 1-2 s, which a job that never
talks to the tracking server (or a Spark worker) should not pay.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.core.config import REPO_ROOT, PipelineConfig
from jobs.core.errors import BadArgument, BadInput
from jobs.core.schema import MODEL_ARRAYS, MODEL_FILE

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous_champion"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)


def client(cfg: PipelineConfig) -> Any:
    """An ``MlflowClient`` for the configured tracking server (also the registry)."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    return MlflowClient(tracking_uri=cfg.mlflow.tracking_uri, registry_uri=cfg.mlflow.tracking_uri)


def not_found(exc: BaseException) -> bool:
    """True when an MLflow error says the object does not exist."""
    return "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower()


def alias_version(cl: Any, name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None (no alias, or no such model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(cl.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not_found(exc):
            return None
        raise


def model_version(cl: Any, name: str, version: str) -> Any:
    """The registered version; ``BadArgument`` naming it when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return cl.get_model_version(name, version)
    except MlflowException as exc:
        if not_found(exc):
            raise BadArgument(f"model {name!r} has no version {version!r} in the registry") from None
        raise


def champion(cfg: PipelineConfig, model_name: str | None = None) -> dict[str, str] | None:
    """The current champion as ``{"model_name", "version", "run_id"}``, or None when there is none."""
    cl = client(cfg)
    name = model_name or cfg.mlflow.model_name
    version = alias_version(cl, name, CHAMPION)
    if version is None:
        return None
    return {"model_name": name, "version": version, "run_id": cl.get_model_version(name, version).run_id or ""}


def git_commit() -> str:
    """The code version (the repository's HEAD), or ``unknown`` outside a checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@dataclass(frozen=True)
class ModelFiles:
    """A registered version of an MF model, downloaded: its ``.npz`` artifact and its lineage."""

    name: str
    version: str
    run_id: str
    artifact: Path
    tags: dict[str, str]

    @property
    def window_end(self) -> str | None:
        """The last training day (the ``window_end`` tag registration copies from the snapshot)."""
        return self.tags.get("window_end") or None


def fetch_model(cfg: PipelineConfig, version: str, workdir: Path, model_name: str | None = None) -> ModelFiles:
    """Download ``version``'s artifact into ``workdir`` and check it holds the model arrays.

    Raises:
        BadArgument: no such version. BadInput: the version is not an MF model (no ``.npz`` or
        missing arrays). MLflow errors on an outage (retryable).
    """
    import mlflow
    import numpy as np

    name = model_name or cfg.mlflow.model_name
    cl = client(cfg)
    mv = model_version(cl, name, version)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(workdir)))
    found = sorted(local.rglob(MODEL_FILE))
    if not found:
        raise BadInput(f"model {name} version {version} has no {MODEL_FILE} artifact (not a jobs.train model)")
    with np.load(found[0]) as npz:
        missing = [key for key in MODEL_ARRAYS if key not in npz.files]
    if missing:
        raise BadInput(f"model {name} version {version}: {MODEL_FILE} lacks {', '.join(missing)}")
    return ModelFiles(name, str(version), mv.run_id or "", found[0], dict(mv.tags or {}))


def download_text(uri: str) -> str:
    """The text of an MLflow artifact (``runs:/<id>/<path>``, ``models:/...``)."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="recsys-artifact-") as tmp:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)).read_text()


def last_training_end(cfg: PipelineConfig) -> tuple[float | None, str | None]:
    """(end time in epoch seconds, run id) of the latest finished training run, if any.

    The training experiment is where every training run, whatever triggered it, records when
    it finished (the monitor's cooldown reads it).
    """
    cl = client(cfg)
    exp = cl.get_experiment_by_name(cfg.mlflow.experiment)
    if exp is None:
        return None, None
    runs = cl.search_runs(
        [exp.experiment_id],
        filter_string="attributes.status = 'FINISHED'",
        order_by=["attributes.end_time DESC"],
        max_results=20,
    )
    for run in runs:
        if run.data.tags.get("recsys.job", "jobs.train").startswith("jobs.train") and run.info.end_time:
            return run.info.end_time / 1000.0, run.info.run_id
    return None, None
