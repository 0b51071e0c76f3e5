"""Registry lookups of one monitoring job: versions, runs, reference documents and model arrays (cached)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from jobs.core import tracking
from jobs.core.config import PipelineConfig
from jobs.core.reference import ReferenceFormatError, validate_reference
from jobs.core.schema import MODEL_FILE, REFERENCE_ARTIFACT


class ModelStore:
    """Registry lookups of one job run: versions, runs, reference documents and npz arrays (cached)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.client = tracking.client(cfg)
        self.name = cfg.mlflow.model_name
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-drift-")
        self._versions: dict[str, Any] = {}
        self._arrays: dict[str, dict[str, np.ndarray] | str] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def version(self, version: str) -> Any:
        if version not in self._versions:
            self._versions[version] = tracking.model_version(self.client, self.name, version)
        return self._versions[version]

    def run_id(self, version: str) -> str:
        return self.version(version).run_id or ""

    def reference(self, version: str) -> tuple[dict[str, Any] | None, str | None, str]:
        """(reference, reason when missing, its URI) of a version's training run."""
        import mlflow
        from mlflow.exceptions import MlflowException

        run_id = self.run_id(version)
        uri = f"runs:/{run_id}/{REFERENCE_ARTIFACT}"
        if not run_id:
            return None, f"model version {version} has no source run", uri
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(Path(self._tmp.name) / f"ref-{version}")
            )
            reference = validate_reference(json.loads(Path(local).read_text()))
        except (MlflowException, OSError) as exc:
            return (
                None,
                f"model version {version} (run {run_id}) has no {REFERENCE_ARTIFACT} artifact "
                f"(trained before reference statistics were logged, or by another trainer): {exc}".splitlines()[0],
                uri,
            )
        except (ValueError, ReferenceFormatError) as exc:
            return None, f"{uri} is not a valid reference: {exc}", uri
        return reference, None, uri

    def offline(self, version: str, k: int | None = None) -> dict[str, Any]:
        """The training run's offline K and recall@K (``recall_at_K``)."""
        run = self.client.get_run(self.run_id(version))
        metrics, params = run.data.metrics, run.data.params
        if k is None:
            k = int(params.get("k") or self.cfg.gate.k)
        return {"k": k, "recall": metrics.get(f"recall_at_{k}"), "run_id": run.info.run_id}

    def arrays(self, version: str) -> dict[str, np.ndarray] | str:
        """The version's npz arrays (ids and seen pairs), or the reason they cannot be loaded."""
        if version in self._arrays:
            return self._arrays[version]
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.name}/{version}", dst_path=str(Path(self._tmp.name) / f"m-{version}")
                )
            )
            found = sorted(local.rglob(MODEL_FILE))
            if not found:
                raise FileNotFoundError(f"no {MODEL_FILE} in the model (not a jobs.train model)")
            with np.load(found[0]) as npz:
                keep = ("user_ids", "item_ids", "seen_indptr", "seen_indices")
                self._arrays[version] = {key: npz[key] for key in keep}
        except (MlflowException, OSError, KeyError) as exc:
            self._arrays[version] = f"model {self.name} version {version}: {exc}".splitlines()[0]
        return self._arrays[version]
