"""Drift monitoring of a served day: data, predictions and the online outcome → report + decision.

``python -m jobs.drift --date D[,D2,...] [--model-version V] [--result-file F]``

For each day D (several days are monitored in date order; the DAG passes every day whose
recommendations arrived since its last run):

1. **Model and reference.** The version V that served day D (``--model-version``, else the
   ``model_version`` of the ``recommendations/dt=D`` manifest — the version the scoring run
   pinned) is looked up in the registry; its training run holds the reference statistics
   ``reference/reference_stats.json`` (``jobs/drift_metrics.py``, computed once by
   ``jobs/snapshot.py`` from the training window's curated events and logged by
   ``jobs/train.py``) and the offline ``recall_at_K``. A version without the artifact (trained
   before it existed, or by another trainer) is not an error: the data-drift section is marked
   unavailable with the reason.
2. **Data drift** of the validated curated partition of D against the reference, per feature
   (``jobs/drift_metrics.py`` lists them): PSI and Jensen-Shannon distance on the reference's
   fixed bins, KS statistic for numeric features (an effect size, never a p-value), unseen
   users/items as the increase over the share seen on the snapshot's held-out day. Verdicts
   from ``drift`` in the config (defaults as in common practice, documented in
   ``include/config/pipeline.yaml``): **alert** at PSI ≥ ``psi_alert`` (0.25) or JS ≥
   ``js_threshold`` (0.1), **warn** at PSI ≥ ``psi_warn`` (0.1); unseen shares alert/warn at an
   increase of ``unseen_share_alert`` (0.1) / ``unseen_share_warn`` (0.05); fewer than
   ``min_samples`` observations → no verdict.
3. **Prediction drift**: served scores of ``recommendations/dt=D`` against the reference day —
   the first recommendations partition served by the same version (PSI/JS on its quantile
   bins, KS), item coverage (distinct recommended items / items the model knows) and the JS
   distance of the recommended-item distribution. Reported, not part of the decision.
4. **Performance**: recommendations ``dt=D-1`` (served on day D) against the positive events
   (click, play, rating) of D: hit-rate@K and recall@K with K = the offline metric's K. The
   relevant items are those the recommender could have served: items known to the model that
   the user had not interacted with in the training window (the model's ``seen`` pairs) nor on
   the curated days the scoring run excluded (its manifest's ``source_days``) — the
   definition of the snapshot's test set, so the online figure is comparable with the
   champion's offline recall@K; relative decay = 1 - online / offline. Missing ``dt=D-1``
   recommendations → section unavailable. Recommendations served by an older version are
   reported but do not drive the decision (the champion changed since).
5. **Decision**: ``retrain`` when the decay reaches ``performance_decay`` (0.3) with at least
   ``min_performance_users`` evaluated users, or when ≥ ``min_drifted_features`` (2) features
   are in alert; the reason names the figures. ``drift_alert`` (any alert anywhere) is what the
   notifier announces. Cooldown and ``force_retrain`` are the DAG's business (they depend on
   other runs, not on the data).

Outputs: ``reports/drift/dt=D/report.json`` and ``report.html`` (plots inline), published
atomically like every partition, and the same two files as artifacts ``drift/`` of an MLflow
run in experiment ``<mlflow.experiment>-monitoring`` tagged with the day and the version (a
rerun of the day reuses that run). The result JSON (``--result-file``) carries the decision,
the report URIs and the MLflow run for the DAG. Exit codes: 2 = bad arguments (unknown
version, a version that contradicts the recommendations' manifest), 3 = the curated day is
missing or not validated (no retry helps).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from jobs import drift_metrics as dm
from jobs import storage
from jobs.config import ConfigError, PipelineConfig, get_config
from jobs.snapshot import POSITIVE_TYPES

REFERENCE_ARTIFACT = "reference/reference_stats.json"
REPORT_ARTIFACT_DIR = "drift"
ARTIFACT_FILE = "recsys.npz"


class DriftArgumentError(ValueError):
    """The arguments cannot be honoured (exit code 2)."""


class DriftInputError(RuntimeError):
    """The data of the day is not there (exit code 3)."""


def report_uri(cfg: PipelineConfig, day: str) -> str:
    return f"{cfg.storage.zone('reports')}/drift/dt={day}"


def monitoring_experiment(cfg: PipelineConfig) -> str:
    return f"{cfg.mlflow.experiment}-monitoring"


def thresholds(cfg: PipelineConfig) -> dict[str, float]:
    d = cfg.drift
    return {
        "psi_warn": d.psi_warn,
        "psi_alert": d.psi_alert,
        "js_threshold": d.js_threshold,
        "unseen_share_warn": d.unseen_share_warn,
        "unseen_share_alert": d.unseen_share_alert,
        "min_samples": d.min_samples,
        "min_drifted_features": d.min_drifted_features,
        "performance_decay": d.performance_decay,
        "min_performance_users": d.min_performance_users,
    }


def _unavailable(reason: str, **extra: Any) -> dict[str, Any]:
    return {"available": False, "reason": reason, **extra}


# ---- data access --------------------------------------------------------------------------


def curated_files(cfg: PipelineConfig, day: str) -> list[str]:
    part = cfg.storage.partition("curated", day)
    manifest = storage.read_manifest(part) or {}
    return [f"{part}/{name}" for name in manifest.get("files", [])]


def load_day(cfg: PipelineConfig, day: str) -> Any:
    """The validated curated events of ``day`` (feature columns); DriftInputError otherwise."""
    from jobs.validate import is_validated

    part = cfg.storage.partition("curated", day)
    if not is_validated(part):
        why = "is not published" if storage.read_manifest(part) is None else "did not pass validation"
        raise DriftInputError(f"curated day dt={day} {why} ({part}): only validated days are monitored")
    return dm.read_curated(curated_files(cfg, day))


def read_recommendations(cfg: PipelineConfig, day: str) -> tuple[dict[str, Any] | None, Any]:
    """(manifest, table) of ``recommendations/dt=day``, or (None, None) when not published."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = cfg.storage.partition("recommendations", day)
    manifest = storage.read_manifest(part)
    if manifest is None:
        return None, None
    files = sorted(storage.local_path(part).glob("part-*.parquet"))
    cols = ["user_id", "rank", "item_id", "score"]
    table = pa.concat_tables([pq.read_table(f, columns=cols) for f in files]) if files else None
    if table is None:
        table = pa.table({c: pa.array([], pa.int64()) for c in cols})
    return manifest, table


def positive_pairs(table: Any) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc

    mask = pc.is_in(table.column("event_type"), value_set=pa.array(list(POSITIVE_TYPES)))
    pos = table.filter(mask)
    return (
        pos.column("user_id").to_numpy().astype(np.int64, copy=False),
        pos.column("item_id").to_numpy().astype(np.int64, copy=False),
    )


# ---- the model's side (MLflow) ------------------------------------------------------------


class ModelStore:
    """Registry lookups of one job run: versions, runs, reference documents and npz arrays (cached)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        from jobs.registry import client

        self.cfg = cfg
        self.client = client(cfg)
        self.name = cfg.mlflow.model_name
        self._tmp = tempfile.TemporaryDirectory(prefix="recsys-drift-")
        self._versions: dict[str, Any] = {}
        self._arrays: dict[str, dict[str, np.ndarray] | str] = {}

    def close(self) -> None:
        self._tmp.cleanup()

    def version(self, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        if version not in self._versions:
            try:
                self._versions[version] = self.client.get_model_version(self.name, version)
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
                    raise DriftArgumentError(
                        f"model {self.name!r} has no version {version!r} in the registry"
                    ) from None
                raise
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
            reference = dm.validate_reference(json.loads(Path(local).read_text()))
        except (MlflowException, OSError) as exc:
            return (
                None,
                f"model version {version} (run {run_id}) has no {REFERENCE_ARTIFACT} artifact "
                f"(trained before reference statistics were logged, or by another trainer): {exc}".splitlines()[0],
                uri,
            )
        except (ValueError, dm.ReferenceFormatError) as exc:
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
            found = sorted(local.rglob(ARTIFACT_FILE))
            if not found:
                raise FileNotFoundError(f"no {ARTIFACT_FILE} in the model (not a jobs.train model)")
            with np.load(found[0]) as npz:
                keep = ("user_ids", "item_ids", "seen_indptr", "seen_indices")
                self._arrays[version] = {key: npz[key] for key in keep}
        except (MlflowException, OSError, KeyError) as exc:
            self._arrays[version] = f"model {self.name} version {version}: {exc}".splitlines()[0]
        return self._arrays[version]


# ---- sections -----------------------------------------------------------------------------


def data_drift(reference: dict[str, Any] | None, why: str | None, table: Any, th: dict[str, float]) -> dict[str, Any]:
    if reference is None:
        return _unavailable(why or "no reference statistics")
    features = dm.day_features(table, reference)
    for result in features.values():
        result["verdict"], result["why"] = dm.feature_verdict(result, th)
    alerts = [n for n, f in features.items() if f["verdict"] == "alert"]
    warns = [n for n, f in features.items() if f["verdict"] == "warn"]
    psis = [f["psi"] for f in features.values() if f.get("psi") is not None]
    return {
        "available": True,
        "rows": table.num_rows,
        "features": features,
        "alerts": alerts,
        "warnings": warns,
        "max_psi": max(psis) if psis else None,
    }


def reference_day(cfg: PipelineConfig, version: str, up_to: str) -> str | None:
    """The first published recommendations day (≤ ``up_to``) served by ``version``."""
    zone = cfg.storage.zone("recommendations")
    for d in storage.published_days(zone):
        if d > up_to:
            break
        manifest = storage.read_manifest(f"{zone}/dt={d}") or {}
        if str(manifest.get("model_version")) == version:
            return d
    return None


def _item_distribution(items: np.ndarray) -> dict[str, int]:
    ids, counts = np.unique(items, return_counts=True)
    return {str(i): int(c) for i, c in zip(ids, counts, strict=True)}


def prediction_drift(
    cfg: PipelineConfig, day: str, version: str, recs: Any, n_items: int | None, th: dict[str, float]
) -> dict[str, Any]:
    if recs is None:
        return _unavailable(f"no recommendations partition for dt={day}")
    ref_day = reference_day(cfg, version, day)
    if ref_day is None:
        return _unavailable(f"no recommendations partition served by version {version} up to dt={day}")
    _, ref = read_recommendations(cfg, ref_day) if ref_day != day else (None, recs)
    cur_items = recs.column("item_id").to_numpy()
    ref_items = ref.column("item_id").to_numpy()
    out: dict[str, Any] = {
        "available": True,
        "reference_day": ref_day,
        "rows": recs.num_rows,
        "coverage": float(np.unique(cur_items).size / n_items) if n_items else None,
        "reference_coverage": float(np.unique(ref_items).size / n_items) if n_items else None,
        "distinct_items": int(np.unique(cur_items).size),
    }
    if recs.num_rows == 0 or ref.num_rows == 0:
        return {**out, "score": None, "items_js": None, "verdict": "insufficient"}
    score = dm.score_drift(ref.column("score").to_numpy(), recs.column("score").to_numpy())
    _, r, c = dm.aligned(_item_distribution(ref_items), _item_distribution(cur_items))
    out["items_js"] = dm.js_distance(r, c)
    score["verdict"], score["why"] = dm.feature_verdict(score, th)
    out["score"] = score
    out["verdict"] = "reference" if ref_day == day else score["verdict"]
    if ref_day == day:
        out["note"] = "this is the version's first served day: it is the reference"
    return out


def _seen_pairs(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    indptr = arrays["seen_indptr"]
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    return arrays["user_ids"][rows], arrays["item_ids"][arrays["seen_indices"]]


def judge_performance(
    result: dict[str, Any], offline_recall: float | None, k: int, th: dict[str, float]
) -> dict[str, Any]:
    """The performance section from ``drift_metrics.online_performance``'s result: decay and verdict."""
    decay = dm.relative_decay(result["recall"], offline_recall)
    out: dict[str, Any] = {"available": True, "k": k, **result, "offline_recall": offline_recall, "decay": decay}
    if result["users"] < th["min_performance_users"]:
        out["verdict"] = "insufficient"
        out["why"] = f"{result['users']} evaluated users < min_performance_users {th['min_performance_users']:g}"
    elif decay is None:
        out["verdict"] = "insufficient"
        out["why"] = f"no offline recall_at_{k} to compare with"
    elif decay >= th["performance_decay"]:
        out["verdict"] = "alert"
        out["why"] = f"recall@{k} {result['recall']:.4f} is {decay:.0%} below offline {offline_recall:.4f}"
    else:
        out["verdict"] = "ok"
        out["why"] = f"recall@{k} {result['recall']:.4f} vs offline {offline_recall:.4f} ({decay:+.0%} decay)"
    return out


def performance(
    cfg: PipelineConfig, day: str, version: str, models: ModelStore, today: Any, th: dict[str, float]
) -> dict[str, Any]:
    prev = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    manifest, recs = read_recommendations(cfg, prev)
    if manifest is None:
        return _unavailable(f"no recommendations partition for dt={prev} (nothing was served on {day})", recs_day=prev)
    served_by = str(manifest.get("model_version", ""))
    if not served_by:
        return _unavailable(f"recommendations dt={prev} name no model_version", recs_day=prev)
    arrays = models.arrays(served_by)
    if isinstance(arrays, str):
        return _unavailable(arrays, recs_day=prev, model_version=served_by)
    offline = models.offline(served_by)
    k = min(int(offline["k"]), int(manifest.get("k") or offline["k"]))
    if k != offline["k"]:
        offline = models.offline(served_by, k)
    seen_u, seen_i = _seen_pairs(arrays)
    excluded = [d for d in manifest.get("source_days", []) if d < day]
    extra_u, extra_i = [seen_u], [seen_i]
    for d in excluded:
        try:
            u, i = positive_pairs(load_day(cfg, d))
        except DriftInputError:
            continue
        extra_u.append(u)
        extra_i.append(i)
    pos_u, pos_i = positive_pairs(today)
    result = dm.online_performance(
        recs.column("user_id").to_numpy(),
        recs.column("item_id").to_numpy(),
        recs.column("rank").to_numpy(),
        pos_u,
        pos_i,
        k,
        known_users=np.unique(arrays["user_ids"]),
        known_items=np.unique(arrays["item_ids"]),
        seen=(np.concatenate(extra_u), np.concatenate(extra_i)),
    )
    out = {
        "recs_day": prev,
        "model_version": served_by,
        "excluded_days": excluded,
        **judge_performance(result, offline["recall"], k, th),
        "used_for_decision": served_by == version,
    }
    if served_by != version:
        out["note"] = f"served by version {served_by}, since replaced by {version}: reported, not used to decide"
    return out


def decide(data: dict[str, Any], pred: dict[str, Any], perf: dict[str, Any], th: dict[str, float]) -> dict[str, Any]:
    """The retrain decision of one day and its reason (see the module docstring, step 5)."""
    alerts = data.get("alerts", []) if data.get("available") else []
    perf_alert = bool(perf.get("available") and perf.get("verdict") == "alert" and perf.get("used_for_decision"))
    reasons = []
    if perf_alert:
        reasons.append(f"performance decay: {perf['why']} (limit {th['performance_decay']:.0%})")
    if len(alerts) >= th["min_drifted_features"]:
        reasons.append(f"data drift on {len(alerts)} features (≥ {th['min_drifted_features']:g}): {', '.join(alerts)}")
    pred_alert = bool(pred.get("available") and pred.get("verdict") == "alert")
    if reasons:
        reason = "; ".join(reasons)
    else:
        parts = []
        if alerts:
            parts.append(
                f"data drift on {len(alerts)} feature(s) ({', '.join(alerts)}) < {th['min_drifted_features']:g}"
            )
        elif data.get("available"):
            parts.append("no feature in alert")
        else:
            parts.append(f"data drift unavailable ({data.get('reason')})")
        if perf.get("available"):
            parts.append(f"performance {perf.get('verdict')}: {perf.get('why', '')}")
        else:
            parts.append(f"performance unavailable ({perf.get('reason')})")
        reason = "no retrain: " + "; ".join(parts)
    return {
        "retrain": bool(reasons),
        "reason": reason,
        "drift_alert": bool(alerts) or perf_alert or pred_alert,
        "alerts": alerts + (["performance"] if perf_alert else []) + (["prediction"] if pred_alert else []),
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """One trend row of a report."""
    data, perf = report["data_drift"], report["performance"]
    return {
        "day": report["day"],
        "model_version": report["model_version"],
        "alerts": len(data.get("alerts", [])) if data.get("available") else None,
        "max_psi": data.get("max_psi") if data.get("available") else None,
        "hit_rate": perf.get("hit_rate") if perf.get("available") else None,
        "recall": perf.get("recall") if perf.get("available") else None,
        "decay": perf.get("decay") if perf.get("available") else None,
        "retrain": report["decision"]["retrain"],
    }


def trend(cfg: PipelineConfig, day: str, days: int) -> list[dict[str, Any]]:
    """Trend rows of the published reports of the ``days`` days before ``day``."""
    zone = f"{cfg.storage.zone('reports')}/drift"
    first = (date.fromisoformat(day) - timedelta(days=days)).isoformat()
    rows = []
    for d in storage.published_days(zone):
        if first <= d < day:
            try:
                rows.append(summary(json.loads((storage.local_path(f"{zone}/dt={d}") / "report.json").read_text())))
            except (OSError, ValueError, KeyError):
                continue
    return rows


# ---- one day ------------------------------------------------------------------------------


def _mlflow_run(cfg: PipelineConfig, models: ModelStore, day: str, version: str) -> tuple[str, str]:
    """(run id, experiment id) of the monitoring run of (day, version), created once."""
    cl = models.client
    name = monitoring_experiment(cfg)
    exp = cl.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else cl.create_experiment(name)
    found = cl.search_runs(
        [exp_id],
        filter_string=f"tags.`recsys.day` = '{day}' and tags.`recsys.model_version` = '{version}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id, exp_id
    run = cl.create_run(
        exp_id,
        run_name=f"drift-{day}-v{version}",
        tags={
            "recsys.day": day,
            "recsys.model_version": version,
            "recsys.model_name": cfg.mlflow.model_name,
            "recsys.job": "jobs.drift",
        },
    )
    return run.info.run_id, exp_id


def _log_to_mlflow(models: ModelStore, run_id: str, report: dict[str, Any], html_text: str) -> None:
    from mlflow.entities import Metric

    cl = models.client
    stamp = int(time.time() * 1000)
    values: dict[str, float] = {}
    data, perf, pred = report["data_drift"], report["performance"], report["prediction_drift"]
    if data.get("available"):
        values["features_in_alert"] = len(data["alerts"])
        for name, f in data["features"].items():
            for metric in ("psi", "js", "ks"):
                if f.get(metric) is not None:
                    values[f"{metric}_{name}"] = f[metric]
            if f["kind"] == "share":
                values[f"share_{name}"] = f["share"]
    if perf.get("available"):
        for key in ("hit_rate", "recall", "decay", "offline_recall"):
            if perf.get(key) is not None:
                values[f"online_{key}" if key in ("hit_rate", "recall") else key] = perf[key]
    if pred.get("available") and pred.get("score"):
        for metric in ("psi", "js", "ks"):
            if pred["score"].get(metric) is not None:
                values[f"score_{metric}"] = pred["score"][metric]
        if pred.get("coverage") is not None:
            values["item_coverage"] = pred["coverage"]
    values["retrain"] = float(report["decision"]["retrain"])
    cl.log_batch(run_id, metrics=[Metric(k, float(v), stamp, 0) for k, v in values.items()])
    cl.set_tag(run_id, "recsys.retrain", str(report["decision"]["retrain"]).lower())
    cl.set_tag(run_id, "recsys.decision_reason", report["decision"]["reason"][:5000])
    cl.log_text(run_id, json.dumps(report, indent=2, sort_keys=True, default=str), f"{REPORT_ARTIFACT_DIR}/report.json")
    cl.log_text(run_id, html_text, f"{REPORT_ARTIFACT_DIR}/report.html")
    cl.set_terminated(run_id, "FINISHED")


def monitor_day(cfg: PipelineConfig, models: ModelStore, day: str, version: str | None = None) -> dict[str, Any]:
    """Build, publish and log the report of one day; returns the report (with its locations)."""
    from jobs.drift_report import render_html

    started = time.perf_counter()
    th = thresholds(cfg)
    today = load_day(cfg, day)
    manifest, recs = read_recommendations(cfg, day)
    served = str(manifest["model_version"]) if manifest and manifest.get("model_version") is not None else None
    if version and served and served != version:
        raise DriftArgumentError(
            f"recommendations dt={day} were served by model version {served}, not {version} (--model-version)"
        )
    version = version or served
    if not version:
        raise DriftArgumentError(
            f"no recommendations partition for dt={day} to take the model version from: pass --model-version"
        )
    mv = models.version(version)
    reference, why, ref_uri = models.reference(version)
    data = data_drift(reference, why, today, th)
    n_items = int(reference["known"]["items"]["count"]) if reference else None
    if n_items is None:
        arrays = models.arrays(version)
        n_items = len(arrays["item_ids"]) if not isinstance(arrays, str) else None
    pred = prediction_drift(cfg, day, version, recs, n_items, th)
    perf = performance(cfg, day, version, models, today, th)
    decision = decide(data, pred, perf, th)
    run_id, exp_id = _mlflow_run(cfg, models, day, version)
    uri = report_uri(cfg, day)
    report: dict[str, Any] = {
        "day": day,
        "model_name": cfg.mlflow.model_name,
        "model_version": version,
        "model_run_id": mv.run_id,
        "reference": (
            {"available": True, "uri": ref_uri, "days": reference.get("days", []), "rows": reference.get("rows")}
            if reference
            else _unavailable(why or "", uri=ref_uri)
        ),
        "thresholds": th,
        "data_drift": data,
        "prediction_drift": pred,
        "performance": perf,
        "decision": decision,
        "report_uri": uri,
        "mlflow": {"run_id": run_id, "experiment_id": exp_id, "experiment": monitoring_experiment(cfg)},
    }
    report["trend"] = [*trend(cfg, day, cfg.drift.trend_days), summary(report)]
    html_text = render_html(report)
    with storage.staged_partition(uri) as staging:
        storage.write_json_atomic(staging / "report.json", report)
        (staging / "report.html").write_text(html_text)
        storage.publish(
            staging,
            uri,
            {
                "day": day,
                "model_version": version,
                "retrain": decision["retrain"],
                "files": ["report.json", "report.html"],
                "mlflow_run_id": run_id,
            },
        )
    _log_to_mlflow(models, run_id, report, html_text)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def result_of(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's result JSON: the decisive day (the latest calling for a retrain, else the last day)."""
    decisive = next((r for r in reversed(reports) if r["decision"]["retrain"]), reports[-1])
    uri = decisive["report_uri"]
    data, perf = decisive["data_drift"], decisive["performance"]
    return {
        "day": decisive["day"],
        "days": [r["day"] for r in reports],
        "model_version": decisive["model_version"],
        "retrain": decisive["decision"]["retrain"],
        "reason": decisive["decision"]["reason"],
        "drift_alert": any(r["decision"]["drift_alert"] for r in reports),
        "alerts": decisive["decision"]["alerts"],
        "drifted_features": data.get("alerts", []) if data.get("available") else [],
        "hit_rate": perf.get("hit_rate"),
        "recall": perf.get("recall"),
        "decay": perf.get("decay"),
        "report_uri": uri,
        "report_json": f"{uri}/report.json",
        "report_html": f"{uri}/report.html",
        "run_id": decisive["mlflow"]["run_id"],
        "experiment_id": decisive["mlflow"]["experiment_id"],
        "reports": [
            {
                "day": r["day"],
                "retrain": r["decision"]["retrain"],
                "drift_alert": r["decision"]["drift_alert"],
                "report_html": f"{r['report_uri']}/report.html",
            }
            for r in reports
        ],
    }


def last_training_end(cfg: PipelineConfig) -> tuple[float | None, str | None]:
    """(end time in epoch seconds, run id) of the latest finished ``jobs.train`` MLflow run, if any.

    Used by the monitor DAG's cooldown: the training experiment is where every training run,
    whatever triggered it, records when it finished.
    """
    from jobs.registry import client

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


def _days(text: str) -> list[str]:
    days = sorted({d.strip() for d in text.split(",") if d.strip()})
    if not days:
        raise argparse.ArgumentTypeError("at least one day is required")
    for d in days:
        date.fromisoformat(d)
    return days


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.drift", description=__doc__.split("\n\n")[0])
    ap.add_argument("--date", required=True, help="day D (YYYY-MM-DD), or several separated by commas")
    ap.add_argument("--model-version", default="", help="the version that served D (default: the recs manifest's)")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        days = _days(args.date)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        ap.error(f"--date {args.date!r}: {exc}")
    if args.model_version and not args.model_version.isdigit():
        ap.error(f"--model-version must be a registered version number, got {args.model_version!r}")
    if args.model_version and len(days) > 1:
        ap.error("--model-version applies to one day; with several days each day's recommendations name theirs")

    def fail(code: int, message: str) -> int:
        print(f"drift: {message}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": message})
        return code

    try:
        cfg = get_config()
    except ConfigError as exc:
        return fail(2, str(exc))
    models = ModelStore(cfg)
    reports = []
    try:
        for day in days:
            report = monitor_day(cfg, models, day, args.model_version or None)
            reports.append(report)
            data = report["data_drift"]
            perf = report["performance"]
            print(
                f"{day} v{report['model_version']}: "
                + (
                    f"{len(data['alerts'])} feature(s) in alert {data['alerts']}"
                    if data.get("available")
                    else "data drift unavailable"
                )
                + (
                    f"; hit-rate@{perf['k']} {perf['hit_rate']}, recall@{perf['k']} {perf['recall']} "
                    f"(offline {perf['offline_recall']}, decay {perf['decay']})"
                    if perf.get("available")
                    else f"; performance unavailable: {perf['reason']}"
                )
            )
            print(
                f"{day}: {'RETRAIN' if report['decision']['retrain'] else 'no retrain'} — {report['decision']['reason']}"
            )
            print(f"{day}: report {report['report_uri']}/report.html ({report['seconds']}s)")
    except DriftArgumentError as exc:
        return fail(2, str(exc))
    except DriftInputError as exc:
        return fail(3, str(exc))
    finally:
        models.close()
    result = result_of(reports)
    if args.result_file:
        storage.write_json_atomic(args.result_file, result)
    print(json.dumps({"retrain": result["retrain"], "drift_alert": result["drift_alert"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
