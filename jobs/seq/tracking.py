"""Everything rank 0 of a sequential training run sends to MLflow: params, input, epochs, the model."""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np

from jobs.core import storage
from jobs.core.export import log_recsys_model
from jobs.core.schema import REFERENCE_ARTIFACT
from jobs.core.snapshots import TrainData
from jobs.core.training import DistContext
from jobs.seq.sequences import Histories
from jobs.seq.trainer import Hparams

log = logging.getLogger("jobs.seq")


class Tracker:
    """One MLflow run (new, or resumed from a checkpoint's run id)."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        self.client = mlflow.MlflowClient()
        self.run_id: str | None = None
        self._logged: set[int] | None = None

    def start(self, run_id: str | None, run_name: str | None) -> str:
        """Resume ``run_id`` when it can, else start a run; returns its id."""
        if run_id:
            try:
                self.run_id = self.mlflow.start_run(run_id=run_id).info.run_id
                return self.run_id
            except Exception as exc:
                log.warning("cannot resume MLflow run %s (%s); starting a new run", run_id, exc)
        self.run_id = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name).info.run_id
        return self.run_id

    def log_setup(self, data: TrainData, hist: Histories, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> None:
        """Params (once: a resumed run keeps its own), tags, the snapshot as input, its drift reference."""
        mlflow = self.mlflow
        lengths = hist.lengths()
        params = {
            "model": "sasrec",
            **{k: v for k, v in asdict(hp).items() if v is not None},
            "world_size": ctx.world,
            "device": ctx.device.type,
            "n_users": data.n_users,
            "n_items": data.n_items,
            "train_rows": len(data.users),
            "test_rows": len(data.test_users),
            "sequence_items": int(lengths.sum()),
            "median_sequence_length": float(np.median(lengths)) if len(lengths) else 0.0,
            "snapshot": data.uri,
            **extra,
        }
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        if fresh:
            mlflow.log_params(fresh)
        day = str(data.manifest.get("day", ""))
        mlflow.set_tags({"snapshot_uri": data.uri, "snapshot_day": day, "recsys.job": "jobs.seq"})
        if not self.client.get_run(self.run_id).inputs.dataset_inputs:
            import pandas as pd

            frame = pd.DataFrame([{k: str(v) for k, v in data.manifest.items()}])
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(frame, source=data.uri, name=f"snapshot-{day or 'unknown'}")
            mlflow.log_input(dataset, context="training")
        reference = data.manifest.get("reference_stats")
        if reference:
            text = storage.read_text(storage.partition_file(data.uri, data.manifest, reference))
            mlflow.log_text(text or "", REFERENCE_ARTIFACT)

    def log_epochs(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of ``history`` the run does not have yet (step = epoch)."""
        if self._logged is None:
            self._logged = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        for row in history:
            if row["epoch"] not in self._logged:
                metrics = {"loss": row["loss"], "epoch_seconds": row["seconds"], "samples_per_s": row["samples_per_s"]}
                self.mlflow.log_metrics(metrics, step=row["epoch"])
                self._logged.add(row["epoch"])

    def log_model(self, arrays: dict[str, np.ndarray], data: TrainData, default_k: int) -> Any:
        """The export as the ``recsys.npz`` pyfunc: scored like every family's."""
        return log_recsys_model(self.mlflow, arrays, data, default_k)

    def finish(self, metrics: dict[str, float], result: dict[str, Any]) -> None:
        self.mlflow.log_metrics(metrics)
        self.mlflow.log_dict(result, "result.json")
        self.mlflow.end_run()
