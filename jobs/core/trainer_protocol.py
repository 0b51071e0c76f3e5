"""The protocol every trainer follows (``jobs.train``, ``jobs.seq``, ``jobs.ease``, ``jobs.popularity``).

1. **Arguments**: ``add_trainer_arguments`` gives every trainer the same snapshot, MLflow, cache
   and result flags (the model-pipeline factory runs any family with the same argv).
2. **Cache → rerun → train**: ``TrainerRun.open`` computes the cache key (``jobs.core.cache``)
   and the fingerprint; ``reuse`` returns the registered version with that key (nothing
   trained), or the ``result.json`` of a finished run with the same fingerprint beside the
   checkpoint (re-emitted, nothing logged twice); otherwise the family trains.
3. **Result**: ``TrainerRun.result`` builds the declared ``TrainResult`` every family returns;
   ``finish`` writes it as ``result.json`` beside the checkpoint.
4. **MLflow**: ``Tracker`` is the one run every family logs: params (once; a resumed run keeps
   its own), the snapshot's tags and input dataset, its drift reference, epoch metrics, the
   model and the result.

torch and MLflow are imported inside the functions.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from jobs.core import storage
from jobs.core.cache import RUN_TAG, as_bool, cache_key, code_version, find_cached
from jobs.core.config import PipelineConfig
from jobs.core.results import TrainResult
from jobs.core.schema import REFERENCE_ARTIFACT
from jobs.core.snapshots import TrainData

RESULT = "result.json"
log = logging.getLogger("jobs.core.trainer_protocol")


def add_trainer_arguments(ap: argparse.ArgumentParser, cfg: PipelineConfig, checkpoint_help: str) -> None:
    """The flags every trainer shares: ``--snapshot``, MLflow, ``--k``, the cache and ``--checkpoint-dir``."""
    m = cfg.mlflow
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--checkpoint-dir", help=checkpoint_help)
    ap.add_argument("--run-name")
    ap.add_argument("--experiment", default=m.experiment)
    ap.add_argument("--tracking-uri", default=m.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--model-name", default=m.model_name, help="registered model whose versions are the cache")
    ap.add_argument("--force-retrain", type=as_bool, default=False, help="true: train even when cached")


def main_rank() -> bool:
    """True in the process that reports (rank 0 of a torchrun, or the only process)."""
    return int(os.environ.get("RANK", "0")) == 0


def fingerprint(job: str, data: TrainData, hparams: dict[str, Any]) -> str:
    """What a checkpoint and ``result.json`` belong to: the job, the snapshot and the resumable hyper-parameters."""
    payload = {"job": job, "snapshot": data.uri, "manifest": data.manifest, "hparams": hparams}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class TrainerRun:
    """One trainer on one snapshot: its cache key, fingerprint and result folder."""

    job: str
    key: str
    fingerprint: str
    result_dir: str | None
    epochs: int | None = None

    @classmethod
    def open(
        cls,
        cfg: PipelineConfig,
        job: str,
        data: TrainData,
        hparams: dict[str, Any],
        checkpoint_dir: str | None,
        *,
        resumable: dict[str, Any] | None = None,
        default_dir: str | None = None,
        epochs: int | None = None,
    ) -> TrainerRun:
        """Key and fingerprint of ``job`` (``jobs.<package>``) on ``data``.

        Args:
            hparams: every hyper-parameter (the cache key's).
            checkpoint_dir: ``--checkpoint-dir``; None: ``<checkpoints zone>/<default_dir>-<day>-<fp>``
                when ``default_dir`` is given, else no result file (nothing re-emitted).
            resumable: the hyper-parameters a checkpoint must share (default ``hparams``).
            epochs: a finished run is re-emitted only when it ran this many epochs.
        """
        package = job.removeprefix("jobs.")
        key = cache_key(data.manifest, job, code_version(package, "core"), hparams)
        fp = fingerprint(job, data, hparams if resumable is None else resumable)
        if checkpoint_dir is None and default_dir is not None:
            name = f"{default_dir}-{data.manifest.get('day', 'snapshot')}-{fp[:12]}"
            checkpoint_dir = storage.join(cfg.storage.zone("checkpoints"), name)
        return cls(job, key, fp, checkpoint_dir, epochs)

    @classmethod
    def for_epochs(
        cls, cfg: PipelineConfig, job: str, data: TrainData, hp: Any, checkpoint_dir: str | None, default_dir: str
    ) -> TrainerRun:
        """``open`` for an epoch-trained family (MF, sequential): ``hp`` is its hyper-parameter
        dataclass, with ``fingerprint_fields()`` (what a checkpoint must share) and ``epochs``."""
        return cls.open(
            cfg,
            job,
            data,
            dataclasses.asdict(hp),
            checkpoint_dir,
            resumable=hp.fingerprint_fields(),
            default_dir=default_dir,
            epochs=hp.epochs,
        )

    def reuse(self, cfg: PipelineConfig, args: argparse.Namespace, **extra: Any) -> TrainResult | None:
        """A result without training: the registered version with this cache key (unless
        ``--force-retrain``), else a finished run's ``result.json`` of the same fingerprint
        (unless ``--fresh``); None: train. ``extra`` joins a cache hit's result."""
        if not args.force_retrain:
            hit = find_cached(cfg, args.model_name, self.key, args.tracking_uri)
            if hit is not None:
                log.info("cached: version %s has this cache key (%s); nothing trained", hit["cached_version"], self.key)
                print(f"cached: version {hit['cached_version']} has this cache key; nothing trained", flush=True)
                return cast(TrainResult, {"cached": True, "cache_key": self.key, "k": args.k, **extra, **hit})
        if getattr(args, "fresh", False) or self.result_dir is None:
            return None
        path = storage.join(self.result_dir, RESULT)
        text = storage.read_text(path)
        try:
            previous = json.loads(text) if text is not None else None
        except ValueError:
            return None
        if not previous or previous.get("fingerprint") != self.fingerprint:
            return None
        if self.epochs is not None and previous.get("epochs_done") != self.epochs:
            return None
        log.info("already trained (%s); re-emitting its result", path)
        return cast(TrainResult, previous)

    def result(
        self, tracker: Tracker, model_uri: str, metrics: dict[str, float], k: int, data: TrainData, **extra: Any
    ) -> TrainResult:
        """The declared result of a trained (not cached) run."""
        return cast(
            TrainResult,
            {
                "run_id": tracker.run_id,
                "model_uri": model_uri,
                "run_model_uri": f"runs:/{tracker.run_id}/model",
                "experiment_id": tracker.experiment_id,
                "metrics": metrics,
                "k": k,
                **extra,
                "snapshot": data.uri,
                "snapshot_day": data.manifest.get("day"),
                "fingerprint": self.fingerprint,
                "cached": False,
                "cache_key": self.key,
            },
        )

    def finish(self, tracker: Tracker, metrics: dict[str, float], result: TrainResult) -> TrainResult:
        """Close the MLflow run with the metrics and the result, then write ``result.json`` (if any folder)."""
        tracker.finish(metrics, dict(result))
        if self.result_dir is not None:
            storage.write_json_atomic(storage.join(self.result_dir, RESULT), result)
        return result


def snapshot_params(data: TrainData) -> dict[str, Any]:
    """The run params every family logs about its snapshot."""
    return {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "train_rows": len(data.users),
        "test_rows": len(data.test_users),
        "snapshot": data.uri,
    }


class Tracker:
    """One MLflow run of a trainer (new, or resumed from a checkpoint's run id); rank 0 only."""

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
                log.info("resuming MLflow run %s", run_id)
                return self.run_id
            except Exception as exc:
                log.warning("cannot resume MLflow run %s (%s); starting a new run", run_id, exc)
        self.run_id = self.mlflow.start_run(experiment_id=self.experiment_id, run_name=run_name).info.run_id
        return self.run_id

    def log_inputs(self, data: TrainData, job: str, params: dict[str, Any], cache_key: str | None = None) -> None:
        """Params (a resumed run keeps its own; a changed one is recorded as a ``resumed.*`` tag),
        the snapshot's tags and input dataset, the cache key and the snapshot's drift reference."""
        mlflow = self.mlflow
        existing = self.client.get_run(self.run_id).data.params
        fresh = {k: str(v) for k, v in params.items() if k not in existing}
        changed = {k: str(v) for k, v in params.items() if k in existing and existing[k] != str(v)}
        if fresh:
            mlflow.log_params(fresh)
        for k, v in changed.items():  # params are immutable in MLflow: record the override as a tag
            mlflow.set_tag(f"resumed.{k}", v)
        day = str(data.manifest.get("day", ""))
        tags = {"snapshot_uri": data.uri, "snapshot_day": day, "recsys.job": job}
        mlflow.set_tags({**tags, **({RUN_TAG: cache_key} if cache_key else {})})
        if not self.client.get_run(self.run_id).inputs.dataset_inputs:
            import pandas as pd

            frame = pd.DataFrame([{k: str(v) for k, v in data.manifest.items()}])
            with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
                warnings.simplefilter("ignore", UserWarning)
                dataset = mlflow.data.from_pandas(frame, source=data.uri, name=f"snapshot-{day or 'unknown'}")
            mlflow.log_input(dataset, context="training")
        reference = data.manifest.get("reference_stats")
        if reference:  # the drift reference travels with the model (the monitor reads it)
            text = storage.read_text(storage.partition_file(data.uri, data.manifest, reference))
            mlflow.log_text(text or "", REFERENCE_ARTIFACT)

    def log_epochs(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of ``history`` the run does not have yet (step = epoch).

        The run's logged steps are read once (a resumed run may lack the epochs its killed
        predecessor checkpointed but did not log), then tracked here.
        """
        if self._logged is None:
            self._logged = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        for row in history:
            if row["epoch"] not in self._logged:
                metrics = {"loss": row["loss"], "epoch_seconds": row["seconds"], "samples_per_s": row["samples_per_s"]}
                self.mlflow.log_metrics(metrics, step=row["epoch"])
                self._logged.add(row["epoch"])

    def log_model(self, arrays: dict[str, np.ndarray], data: TrainData, default_k: int) -> Any:
        """The factors as the ``recsys.npz`` pyfunc every family is scored through; MLflow's ``ModelInfo``."""
        from jobs.core.export import log_recsys_model

        return log_recsys_model(self.mlflow, arrays, data, default_k)

    def finish(self, metrics: dict[str, float], result: dict[str, Any]) -> None:
        self.mlflow.log_metrics(metrics)
        self.mlflow.log_dict(result, "result.json")
        self.mlflow.end_run()
