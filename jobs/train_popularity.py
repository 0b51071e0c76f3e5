"""Popularity baseline as a servable model: the second trainer behind the model-pipeline factory.

``python -m jobs.train_popularity --snapshot DIR [--run-name NAME] [--checkpoint-dir DIR]
[--experiment NAME] [--tracking-uri URI] [--k K] [--result-file PATH]``

Why a model for popularity: it is the cold-start fallback a recommender serves when the learned
model cannot be trusted, and it is exactly the baseline the gate (``jobs.evaluate``) compares
every challenger with. Registering it as its own model (``recsys-popularity``) through the same
snapshot → gate → registry → promotion path makes that fallback versioned and auditable, and
proves that the pipeline pieces accept any trainer that follows the trainer's CLI contract:

* input: a published snapshot folder (``jobs/snapshot.py``), read and checked by
  ``jobs.train.load_snapshot`` (a bad snapshot exits 2 naming the problem);
* output: an MLflow run in the configured experiment with params, the snapshot tags and input
  dataset, test metrics ``recall_at_K``/``ndcg_at_K`` and the model as a pyfunc with the
  serving signature (``user_id``, optional ``k`` → ``user_id``, ``item_ids``, ``scores``);
* result JSON (``--result-file``, and ``/airflow/xcom/return.json`` when that folder exists):
  ``{"run_id", "model_uri", "run_model_uri", "experiment_id", "metrics", "k", ...}``; stdout ends
  with ``MLFLOW_RUN_ID=<id>``.

The ranking: items by the number of distinct training users (the snapshot's ``popularity``),
ties to the lower item index, items the user interacted with in the window excluded; users
unknown to the snapshot get the global top K. That is the gate's popularity ranker, so on the
same snapshot the gate scores this model exactly like its baseline (and, with the default lift
rule, never blesses it over a champion-less registry by accident).

Idempotent: a run with the same snapshot manifest whose ``result.json`` sits in a local
``--checkpoint-dir`` is re-emitted instead of logging a second model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.ids import IdIndex

try:  # the pyfunc wrapper needs MLflow; the ranking itself does not
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is installed wherever the pyfunc is used
    PythonModel = object  # type: ignore[assignment,misc]

ARTIFACT_KEY = "popularity"
RESULT = "result.json"


class PopularityRecommender:
    """Top-K most popular unseen items per user id, from packed arrays (the pyfunc's engine)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.item_ids = np.asarray(arrays["item_ids"], dtype=np.int64)
        self.popularity = np.asarray(arrays["popularity"], dtype=np.int64)
        self.user_ids = np.asarray(arrays["user_ids"], dtype=np.int64)
        self.seen_indptr = np.asarray(arrays["seen_indptr"], dtype=np.int64)
        self.seen_indices = np.asarray(arrays["seen_indices"], dtype=np.int64)
        self.default_k = int(arrays["default_k"])
        self._user_rows = IdIndex(self.user_ids)

    @property
    def indptr(self) -> np.ndarray:  # the CSR view popularity_top_k expects
        return self.seen_indptr

    @property
    def indices(self) -> np.ndarray:
        return self.seen_indices

    def user_index(self, user_ids: np.ndarray) -> np.ndarray:
        """Row of each user id in the snapshot, -1 for an unknown id."""
        return self._user_rows(user_ids)

    def recommend(self, user_ids: np.ndarray, ks: np.ndarray) -> list[dict[str, Any]]:
        from jobs.metrics import popularity_top_k

        user_ids = np.asarray(user_ids, dtype=np.int64)
        ks = np.asarray(ks, dtype=np.int64)
        if (ks < 1).any():
            raise ValueError("k must be at least 1")
        kmax = int(ks.max()) if len(ks) else 0
        rows = self.user_index(user_ids)
        known = rows >= 0
        ranked = np.full((len(user_ids), min(kmax, len(self.item_ids))), -1, dtype=np.int64)
        if known.any():
            ranked[known] = popularity_top_k(self.popularity, rows[known], kmax, self)
        if (~known).any():
            ranked[~known] = popularity_top_k(self.popularity, np.zeros((~known).sum(), np.int64), kmax)
        out = []
        for uid, k, row in zip(user_ids, ks, ranked, strict=True):
            idx = row[:k][row[:k] >= 0]
            out.append(
                {
                    "user_id": int(uid),
                    "item_ids": self.item_ids[idx].tolist(),
                    "scores": self.popularity[idx].astype(np.float64).tolist(),
                }
            )
        return out


class PopularityPyfunc(PythonModel):
    """MLflow pyfunc: DataFrame[user_id int64, k int64 optional] → DataFrame[user_id, item_ids, scores]."""

    def load_context(self, context) -> None:
        with np.load(context.artifacts[ARTIFACT_KEY]) as npz:
            self._rec = PopularityRecommender({key: npz[key] for key in npz.files})

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "user_id" not in frame.columns:
            raise ValueError("input must have a user_id column")
        default = int(params["k"]) if params and params.get("k") else self._rec.default_k
        ks = np.full(len(frame), default, dtype=np.int64)
        if "k" in frame.columns and frame["k"].notna().any():
            ks = frame["k"].fillna(default).to_numpy(dtype=np.int64)
        rows = self._rec.recommend(frame["user_id"].to_numpy(dtype=np.int64), ks)
        return pd.DataFrame(rows, columns=["user_id", "item_ids", "scores"])


def seen_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, indices) of the distinct training (user, item) pairs."""
    keys = np.unique(np.asarray(users, np.int64) * n_items + np.asarray(items, np.int64))
    rows, cols = np.divmod(keys, n_items)
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_users), out=indptr[1:])
    return indptr, cols.astype(np.int64)


def fingerprint(data: Any) -> str:
    payload = {"job": "jobs.train_popularity", "snapshot": data.uri, "manifest": data.manifest}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def train(args: argparse.Namespace, default_k: int) -> dict[str, Any]:
    """Rank, evaluate on the snapshot's test pairs, log the pyfunc; returns the result JSON."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, Schema

    from jobs import metrics as metrics_module
    from jobs.train import load_snapshot

    data = load_snapshot(args.snapshot)
    fp = fingerprint(data)
    done = Path(args.checkpoint_dir) / RESULT if args.checkpoint_dir and "://" not in args.checkpoint_dir else None
    if done is not None and done.is_file():
        previous = json.loads(done.read_text())
        if previous.get("fingerprint") == fp:
            print(f"already trained ({done}); re-emitting its result", file=sys.stderr)
            return previous
    indptr, indices = seen_csr(data.users, data.items, data.n_users, data.n_items)
    arrays = {
        "item_ids": data.item_ids,
        "popularity": data.popularity,
        "user_ids": data.user_ids,
        "seen_indptr": indptr,
        "seen_indices": indices,
        "default_k": np.array(int(default_k)),
    }
    rec = PopularityRecommender(arrays)
    test_users = np.unique(data.test_users)
    ranked = metrics_module.popularity_top_k(data.popularity, test_users, args.k, rec)
    m = metrics_module.evaluate_ranking(ranked, (data.test_users, data.test_items), users=test_users, k=args.k)
    k = args.k
    metrics = {f"recall_at_{k}": m["recall"], f"ndcg_at_{k}": m["ndcg"], "test_users": float(m["users"])}

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment_id = mlflow.set_experiment(args.experiment).experiment_id
    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "user_id"), ColSpec("long", "k", required=False)]),
        outputs=Schema(
            [ColSpec("long", "user_id"), ColSpec(Array("long"), "item_ids"), ColSpec(Array("double"), "scores")]
        ),
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=args.run_name) as run:
        mlflow.log_params(
            {
                "model": "popularity",
                "ranking": "distinct training users per item, ties to the lower item index, seen items excluded",
                "n_users": data.n_users,
                "n_items": data.n_items,
                "train_rows": len(data.users),
                "snapshot": data.uri,
                "k": k,
            }
        )
        mlflow.set_tags(
            {
                "snapshot_uri": data.uri,
                "snapshot_day": str(data.manifest.get("day", "")),
                "recsys.job": "jobs.train_popularity",
            }
        )
        frame = pd.DataFrame([{key: str(value) for key, value in data.manifest.items()}])
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways": a local path
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(frame, source=data.uri, name=f"snapshot-{data.manifest.get('day')}")
        mlflow.log_input(dataset, context="training")
        mlflow.log_metrics(metrics)
        with tempfile.TemporaryDirectory(prefix="recsys-popularity-") as tmp:
            npz = Path(tmp) / "popularity.npz"
            with open(npz, "wb") as fh:
                np.savez(fh, **arrays)
            code = Path(tmp) / "code" / "jobs"
            code.mkdir(parents=True)
            shutil.copy2(Path(__file__), code / "train_popularity.py")
            shutil.copy2(Path(metrics_module.__file__), code / "metrics.py")
            shutil.copy2(Path(__file__).with_name("ids.py"), code / "ids.py")
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=PopularityPyfunc(),
                artifacts={ARTIFACT_KEY: str(npz)},
                code_paths=[str(code)],
                signature=signature,
                input_example=pd.DataFrame({"user_id": data.user_ids[: min(3, data.n_users)].astype(np.int64)}),
                pip_requirements=[
                    f"mlflow-skinny=={mlflow.__version__}",
                    f"numpy=={np.__version__}",
                    f"pandas=={pd.__version__}",
                ],
            )
        run_id = run.info.run_id
        result = {
            "run_id": run_id,
            "model_uri": info.model_uri,
            "run_model_uri": f"runs:/{run_id}/model",
            "experiment_id": experiment_id,
            "metrics": metrics,
            "k": k,
            "snapshot": data.uri,
            "snapshot_day": data.manifest.get("day"),
            "fingerprint": fp,
        }
        mlflow.log_dict(result, "result.json")
    if done is not None:
        from jobs import storage

        storage.write_json_atomic(done, result)
    return result


def main(argv: list[str] | None = None) -> int:
    from jobs.config import ConfigError, get_config
    from jobs.train import InputError

    try:
        cfg = get_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(prog="python -m jobs.train_popularity", description=__doc__.split("\n\n")[0])
    ap.add_argument("--snapshot", required=True, help="snapshot folder (train/test/users/items parquet + _SUCCESS)")
    ap.add_argument("--run-name")
    ap.add_argument(
        "--checkpoint-dir", help="local folder for result.json (idempotent reruns); object-store URIs skip it"
    )
    ap.add_argument("--experiment", default=cfg.mlflow.experiment)
    ap.add_argument("--tracking-uri", default=cfg.mlflow.tracking_uri)
    ap.add_argument("--k", type=int, default=cfg.gate.k, help="cut-off of the test metrics (gate.k)")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    if args.k < 1:
        ap.error("--k must be at least 1")
    try:
        result = train(args, cfg.scoring.k)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if args.result_file:
            from jobs import storage

            storage.write_json_atomic(args.result_file, {"message": str(exc)})
        return 2
    k = result["k"]
    print(
        f"popularity: recall@{k}={result['metrics'][f'recall_at_{k}']:.4f} "
        f"ndcg@{k}={result['metrics'][f'ndcg_at_{k}']:.4f} (run {result['run_id']})",
        file=sys.stderr,
    )
    from jobs.train import emit_result  # the KPO XCom contract, shared with the main trainer

    emit_result(result, args.result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
