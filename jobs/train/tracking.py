"""Everything rank 0 of a training run sends to MLflow: params, inputs, epochs, the model."""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from typing import Any

import numpy as np

from jobs.core import storage
from jobs.core.schema import REFERENCE_ARTIFACT
from jobs.core.snapshots import TrainData
from jobs.train.trainer import DistContext, Hparams

log = logging.getLogger("jobs.train")


class Tracker:
    """Everything rank 0 sends to MLflow."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        self.client = mlflow.MlflowClient()
        self.run_id: str | None = None
        self._logged: set[int] | None = None

    def start(self, run_id: str | None, run_name: str | None) -> str:
        mlflow = self.mlflow
        if run_id:
            try:
                run = mlflow.start_run(run_id=run_id)
                log.info("resuming MLflow run %s", run_id)
                self.run_id = run.info.run_id
                return self.run_id
            except Exception as exc:
                log.warning("cannot resume MLflow run %s (%s); starting a new run", run_id, exc)
        run = mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name)
        self.run_id = run.info.run_id
        return self.run_id

    def log_setup(self, data: TrainData, hp: Hparams, ctx: DistContext, extra: dict[str, Any]) -> None:
        mlflow = self.mlflow
        params = {
            **{k: v for k, v in asdict(hp).items() if v is not None},
            "world_size": ctx.world,
            "device": ctx.device.type,
            "global_batch_size": hp.batch_size,
            "per_rank_batch_size": -(-hp.batch_size // ctx.world),
            "n_users": data.n_users,
            "n_items": data.n_items,
            "train_rows": len(data.users),
            "test_rows": len(data.test_users),
            "snapshot": data.uri,
            **extra,
        }
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        changed = {k: str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
        if fresh:
            mlflow.log_params(fresh)
        for k, v in changed.items():  # params are immutable in MLflow: record the override as a tag
            mlflow.set_tag(f"resumed.{k}", v)
        mlflow.set_tags(
            {
                "snapshot_uri": data.uri,
                "snapshot_day": str(data.manifest.get("day", "")),
                "recsys.job": "jobs.train",
            }
        )
        if not self.client.get_run(self.run_id).inputs.dataset_inputs:
            import pandas as pd

            frame = pd.DataFrame([{k: str(v) for k, v in data.manifest.items()}])
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(
                    frame, source=data.uri, name=f"snapshot-{data.manifest.get('day', 'unknown')}"
                )
            mlflow.log_input(dataset, context="training")
        reference = data.manifest.get("reference_stats")
        if reference:  # the drift reference travels with the model (jobs/drift_metrics.py)
            text = storage.read_text(storage.partition_file(data.uri, data.manifest, reference))
            mlflow.log_text(text or "", REFERENCE_ARTIFACT)

    def log_epochs(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of ``history`` that the run does not have yet (step = epoch).

        The run's logged steps are read once (a resumed run may lack the epochs its killed
        predecessor checkpointed but did not log), then tracked here.
        """
        if self._logged is None:
            self._logged = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        for row in history:
            if row["epoch"] in self._logged:
                continue
            self.mlflow.log_metrics(
                {"loss": row["loss"], "epoch_seconds": row["seconds"], "samples_per_s": row["samples_per_s"]},
                step=row["epoch"],
            )
            self._logged.add(row["epoch"])

    def log_model(self, arrays: dict[str, np.ndarray], data: TrainData, default_k: int):
        from jobs.core.export import log_recsys_model

        return log_recsys_model(self.mlflow, arrays, data, default_k)

    def finish(self, metrics: dict[str, float], result: dict[str, Any]) -> None:
        self.mlflow.log_metrics(metrics)
        self.mlflow.log_dict(result, "result.json")
        self.mlflow.end_run()
