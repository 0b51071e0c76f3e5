"""Drift monitoring of a served day: data, predictions and the online outcome → report + decision.

``python -m jobs.monitor --day D [--model-version V] [--result-file F]``

For the day D:

1. **Model and reference.** The version V that served day D (``--model-version``, else the
   ``model_version`` of the ``recommendations/dt=D`` manifest — the version the scoring run
   pinned) is looked up in the registry; its training run holds the reference statistics
   ``reference/reference_stats.json`` (``jobs.core.reference``, computed once by
   ``jobs.snapshot`` from the training window's curated events and logged by
   ``jobs.train``) and the offline ``recall_at_K``. A version without the artifact (trained
   before it existed, or by another trainer) is not an error: the data-drift section is marked
   unavailable with the reason.
2. **Data drift** of the validated curated partition of D against the reference, per feature
   (``jobs.core.reference`` lists them): PSI and Jensen-Shannon distance on the reference's
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
import time
from datetime import date, timedelta
from typing import Any

from jobs.core import catalog, storage
from jobs.core.cli import BadArgument, model_version, run_job
from jobs.core.config import PipelineConfig
from jobs.core.results import MonitorResult
from jobs.monitor.decision import decide
from jobs.monitor.models import ModelStore
from jobs.monitor.report import render_html
from jobs.monitor.sections import (
    data_drift,
    load_day,
    performance,
    prediction_drift,
    read_recommendations,
    unavailable,
)

REPORT_ARTIFACT_DIR = "drift"


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


def trend(cfg: PipelineConfig, day: date, days: int) -> list[dict[str, Any]]:
    """Trend rows of the published reports of the ``days`` days before ``day``."""
    first, last = (day - timedelta(days=days)).isoformat(), day.isoformat()
    rows = []
    for d in storage.published_days(f"{cfg.storage.zone('reports')}/drift"):
        if first <= d < last:
            try:
                rows.append(summary(json.loads(storage.read_text(catalog.report_json(cfg, "drift", d)) or "")))
            except (OSError, ValueError, KeyError):
                continue
    return rows


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
            "recsys.job": "jobs.monitor",
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


def monitor_day(cfg: PipelineConfig, models: ModelStore, day: date, version: str | None = None) -> dict[str, Any]:
    """Build, publish and log the report of ``day``; returns the report (with its locations).

    Long because it is the job's sequence (reference, features, performance, decision, publish, MLflow) in order.
    """
    started = time.perf_counter()
    th = thresholds(cfg)
    d = day.isoformat()  # the day in paths, tags and the report
    today = load_day(cfg, d)
    manifest, recs = read_recommendations(cfg, d)
    served = str(manifest["model_version"]) if manifest and manifest.get("model_version") is not None else None
    if version and served and served != version:
        raise BadArgument(
            f"recommendations dt={d} were served by model version {served}, not {version} (--model-version)"
        )
    version = version or served
    if not version:
        raise BadArgument(
            f"no recommendations partition for dt={d} to take the model version from: pass --model-version"
        )
    mv = models.version(version)
    reference, why, ref_uri = models.reference(version)
    data = data_drift(reference, why, today, th)
    n_items = int(reference["known"]["items"]["count"]) if reference else None
    if n_items is None:
        arrays = models.arrays(version)
        n_items = len(arrays["item_ids"]) if not isinstance(arrays, str) else None
    pred = prediction_drift(cfg, d, version, recs, n_items, th)
    perf = performance(cfg, day, version, models, today, th)
    decision = decide(data, pred, perf, th)
    run_id, exp_id = _mlflow_run(cfg, models, d, version)
    folder = catalog.report_dir(cfg, "drift", d)
    report: dict[str, Any] = {
        "day": d,
        "model_name": cfg.mlflow.model_name,
        "model_version": version,
        "model_run_id": mv.run_id,
        "reference": (
            {"available": True, "uri": ref_uri, "days": reference.get("days", []), "rows": reference.get("rows")}
            if reference
            else unavailable(why or "", uri=ref_uri)
        ),
        "thresholds": th,
        "data_drift": data,
        "prediction_drift": pred,
        "performance": perf,
        "decision": decision,
        "report_html": catalog.report_html(cfg, "drift", d),
        "report_json": catalog.report_json(cfg, "drift", d),
        "mlflow": {"run_id": run_id, "experiment_id": exp_id, "experiment": monitoring_experiment(cfg)},
    }
    report["trend"] = [*trend(cfg, day, cfg.drift.trend_days), summary(report)]
    html_text = render_html(report)
    with storage.staged_partition(folder, flat=True) as staging:  # the report keeps its address
        storage.write_json_atomic(staging / "report.json", report)
        storage.write_text_atomic(staging / "report.html", html_text)
        storage.publish(
            staging,
            folder,
            {
                "day": d,
                "model_version": version,
                "retrain": decision["retrain"],
                "files": ["report.json", "report.html"],
                "mlflow_run_id": run_id,
            },
        )
    _log_to_mlflow(models, run_id, report, html_text)
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def result_of(report: dict[str, Any]) -> MonitorResult:
    """The job's result JSON: the day's decision, figures and report locations."""
    data, perf, decision = report["data_drift"], report["performance"], report["decision"]
    return {
        "day": report["day"],
        "model_version": report["model_version"],
        "retrain": decision["retrain"],
        "reason": decision["reason"],
        "drift_alert": decision["drift_alert"],
        "alerts": decision["alerts"],
        "drifted_features": data.get("alerts", []) if data.get("available") else [],
        "hit_rate": perf.get("hit_rate"),
        "recall": perf.get("recall"),
        "decay": perf.get("decay"),
        "report_json": report["report_json"],
        "report_html": report["report_html"],
        "run_id": report["mlflow"]["run_id"],
        "experiment_id": report["mlflow"]["experiment_id"],
    }


def _log_day(report: dict[str, Any]) -> None:
    day, data, perf = report["day"], report["data_drift"], report["performance"]
    drift = (
        f"{len(data['alerts'])} feature(s) in alert {data['alerts']}"
        if data.get("available")
        else "data drift unavailable"
    )
    outcome = (
        f"hit-rate@{perf['k']} {perf['hit_rate']}, recall@{perf['k']} {perf['recall']} "
        f"(offline {perf['offline_recall']}, decay {perf['decay']})"
        if perf.get("available")
        else f"performance unavailable: {perf['reason']}"
    )
    print(f"{day} v{report['model_version']}: {drift}; {outcome}")
    print(f"{day}: {'RETRAIN' if report['decision']['retrain'] else 'no retrain'} — {report['decision']['reason']}")
    print(f"{day}: report {report['report_html']} ({report['seconds']}s)")


def run(cfg: PipelineConfig, args: argparse.Namespace) -> MonitorResult:
    models = ModelStore(cfg)
    try:
        report = monitor_day(cfg, models, args.day, args.model_version)
    finally:
        models.close()
    _log_day(report)
    return result_of(report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.monitor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="the served day D (YYYY-MM-DD)")
    ap.add_argument(
        "--model-version",
        default=None,
        type=model_version,
        help="the version that served D (default: the recs manifest's)",
    )
    return run_job(
        "monitoring",
        ap,
        run,
        argv,
        summary=lambda r: f"retrain: {r['retrain']}, drift alert: {r['drift_alert']} — {r['reason']}",
    )
