"""The model card of a registered version, generated from the pipeline's evidence.

Written at registration (``jobs.registry register``) as two MLflow artifacts of the version's
training run — ``model_card/model_card.json`` and ``model_card/model_card.html`` — and named on
the version by the tag ``model_card`` (the artifact URI). The register task's *Model card* link
in Airflow opens the HTML in MLflow's artifact viewer. A person's approval or rejection
(``jobs.registry review``, the ``approve`` task) is added to the card afterwards (``review``).

Every field is read from a source of record, never typed in: the snapshot's manifest (window,
days used and skipped, users, items, pairs, content hash), the curated days' validation verdicts
(the ``_VALIDATION`` markers), the gate's evaluation of the run (``gate/evaluation.json``:
challenger, champion, popularity and oracle on the held-out day, the decision and its reason),
the run's parameters and training metrics, the version's context tags (why it was trained —
a drift report, a schedule, an operator —, Airflow run, code version, cache key), and the cost
ledger (``ledger/<stage>/<day or run>.json``, written by every job's ``run_job``): what ingesting
and validating its days, building its snapshot, training and gating it cost, per stage and in
total (also as the version tags ``cost.wall_s``, ``cost.cpu_s``, ``cost.gpu_s``, ``cost.price``;
priced with ``ledger.cpu_hour_price`` / ``gpu_hour_price``, 0 in the local profile).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from jobs.core import catalog, storage
from jobs.core.cli import pipeline_run, run_scoped
from jobs.core.config import PipelineConfig

CARD_JSON = "model_card/model_card.json"
CARD_HTML = "model_card/model_card.html"
CONTEXT_KEYS = ("trigger_reason", "report_html", "airflow_dag_id", "airflow_run_id", "requested_by")


def _gate(cl: Any, run_id: str) -> dict[str, Any] | None:
    """The gate's evaluation of the run (None when the run was never evaluated). Through the
    caller's client: an outage of the tracking server is an error of the registration, retried
    by Airflow, not a card without its numbers."""
    import tempfile

    if not any(a.path == "gate/evaluation.json" for a in cl.list_artifacts(run_id, "gate")):
        return None
    with tempfile.TemporaryDirectory(prefix="recsys-card-") as tmp:
        local = cl.download_artifacts(run_id, "gate/evaluation.json", tmp)
        with open(local) as fh:
            return json.load(fh)


def build_card(
    cfg: PipelineConfig, cl: Any, name: str, version: str, run_id: str, snapshot_uri: str | None, tags: dict[str, Any]
) -> dict[str, Any]:
    """The card's fields (see the module docstring)."""
    run = cl.get_run(run_id)
    manifest = (storage.read_manifest(snapshot_uri) if snapshot_uri else None) or {}
    days = [*manifest.get("train_days", []), *([manifest["day"]] if manifest.get("day") else [])]
    validation = {}
    for day in days:
        verdict = catalog.validation(cfg, day) or {}
        validation[day] = {
            "success": verdict.get("success"),
            "rows": verdict.get("rows"),
            "failures": verdict.get("failures", []),
            "report": verdict.get("report"),
        }
    gate = _gate(cl, run_id)
    return {
        "model": {
            "name": name,
            "version": version,
            "run_id": run_id,
            "experiment_id": run.info.experiment_id,
            "registered_at": tags.get("registered_at"),
            "family": tags.get("family"),
        },
        "data": {
            "snapshot_uri": snapshot_uri,
            "held_out_day": manifest.get("day"),
            "window_start": manifest.get("window_start"),
            "window_end": manifest.get("window_end"),
            "train_days": manifest.get("train_days", []),
            "skipped_days": manifest.get("skipped_days", []),
            "users": manifest.get("n_users"),
            "items": manifest.get("n_items"),
            "train_pairs": manifest.get("train_rows"),
            "test_pairs": manifest.get("test_rows"),
            "content_hash": manifest.get("content_hash"),
        },
        "validation": validation,
        "evaluation": gate,
        "decision": {
            "decision": tags.get("decision"),
            "reason": tags.get("decision_reason"),
            **({"tournament": tags["tournament"]} if tags.get("tournament") else {}),
        },
        "training": {
            "params": dict(run.data.params),
            "metrics": {k: v for k, v in run.data.metrics.items() if not k.startswith(("gate_", "evidence_"))},
        },
        "context": {k: tags[k] for k in CONTEXT_KEYS if tags.get(k) not in (None, "", "None")},
        "lineage": {
            "git_commit": tags.get("git_commit"),
            "cache_key": tags.get("cache_key"),
            "image": cfg.training.image,
            "snapshot_uri": snapshot_uri,
        },
        "approval": None,  # no human approval step in this profile
        "cost": cost_ledger(cfg, days, snapshot_uri, run_id, pipeline_run()),
    }


def cost_ledger(
    cfg: PipelineConfig, days: list[str], snapshot_uri: str | None, run_id: str, pipeline: str | None = None
) -> dict[str, Any]:
    """The cost of the chain that produced a model, from the ledger zone: ingestion and validation
    of every day it used, its snapshot (the build of the pipeline run ``pipeline`` that trained it:
    ``jobs.core.cli.run_scoped``), its training run and its gate; per stage and in total, priced
    with ``ledger`` (CPU- and GPU-hours); entries not found are listed as ``missing``."""
    zone = cfg.storage.zone("ledger")
    wanted = [(f"ingest/dt={d}", "ingest") for d in days] + [(f"validate/dt={d}", "validate") for d in days]
    if snapshot_uri:
        wanted.append((run_scoped(f"snapshot/{snapshot_uri.rstrip('/').rsplit('/', 1)[-1]}", pipeline), "snapshot"))
    wanted += [(f"train/{run_id}", "train"), (f"evaluate/{run_id}", "evaluate")]
    stages: dict[str, dict[str, float]] = {}
    missing = []
    peak = 0.0
    for key, stage in wanted:
        text = storage.read_text(f"{zone}/{key}.json")
        if text is None:
            missing.append(key)
            continue
        cost = json.loads(text).get("cost", {})
        row = stages.setdefault(stage, {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "gpu_s": 0.0})
        row["jobs"] += 1
        for k in ("wall_s", "cpu_s", "gpu_s"):
            row[k] = round(row[k] + float(cost.get(k) or 0.0), 3)
        peak = max(peak, float(cost.get("peak_rss_mib") or 0.0))
    totals = {k: round(sum(r[k] for r in stages.values()), 3) for k in ("wall_s", "cpu_s", "gpu_s")}
    totals["jobs"] = sum(int(r["jobs"]) for r in stages.values())
    totals["peak_rss_mib"] = peak
    prices = cfg.ledger
    totals["price"] = round(
        totals["cpu_s"] / 3600 * prices.cpu_hour_price + totals["gpu_s"] / 3600 * prices.gpu_hour_price, 6
    )
    totals["currency"] = prices.currency
    return {"totals": totals, "stages": stages, "missing": missing}


def _table(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def render_html(card: dict[str, Any]) -> str:
    """The card as one self-contained HTML page."""
    m, d = card["model"], card["data"]
    parts = [
        f"<h1>Model card: {html.escape(m['name'])} v{html.escape(str(m['version']))}</h1>",
        f"<p>Family: {html.escape(str(m.get('family') or 'not recorded'))}</p>",
        "<h2>Data</h2>",
        _table([(k.replace("_", " "), v) for k, v in d.items()]),
        "<h2>Validation of the days used</h2>",
        _table(
            [(day, "passed" if v["success"] else f"FAILED {v['failures']}") for day, v in card["validation"].items()]
        ),
    ]
    gate = card["evaluation"]
    if gate:
        rankers = sorted(gate["metrics"])
        keys = sorted({k for r in rankers for k in gate["metrics"][r]})
        head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
        body = "".join(
            f"<tr><th>{html.escape(r)}</th>"
            + "".join(f"<td>{gate['metrics'][r].get(k, float('nan')):.4f}</td>" for k in keys)
            + "</tr>"
            for r in rankers
        )
        parts += [
            f"<h2>Evaluation on the held-out day (K={gate.get('k')})</h2>",
            f"<table><tr><th></th>{head}</tr>{body}</table>",
            f"<p>Gate: {'blessed' if gate.get('blessed') else 'not blessed'} — {html.escape(str(gate.get('reason')))}</p>",
        ]
        evidence = gate.get("evidence")
        if evidence and (evidence["days"] or evidence["skipped"]):
            k = gate.get("k")
            rows = [
                (
                    f"{row['day']} {name} ({row['users']} users)",
                    f"recall@{k} {m[f'recall_at_{k}']:.4f}, ndcg@{k} {m[f'ndcg_at_{k}']:.4f}",
                )
                for row in evidence["days"]
                for name, m in row["metrics"].items()
            ]
            rows += [(day, f"skipped: {why}") for day, why in evidence["skipped"].items()]
            parts += [
                "<h2>Evidence: the held-out day and the replay days, per user</h2>",
                _table(rows),
                f"<p>{html.escape(str(evidence.get('summary', '')))}</p>",
            ]
    parts += [
        "<h2>Decision</h2>",
        _table(list(card["decision"].items())),
        *(["<h2>Human review</h2>", _table(list(card["review"].items()))] if card.get("review") else []),
        "<h2>Why it was trained</h2>",
        _table(list(card["context"].items()) or [("reason", "not recorded")]),
        "<h2>Training</h2>",
        _table(sorted(card["training"]["params"].items()) + sorted(card["training"]["metrics"].items())),
        "<h2>Lineage</h2>",
        _table(list(card["lineage"].items())),
        "<h2>What producing it cost</h2>",
        _table(
            [
                (stage, f"{r['jobs']} job(s): {r['wall_s']} s wall, {r['cpu_s']} CPU-s, {r['gpu_s']} GPU-s")
                for stage, r in card["cost"]["stages"].items()
            ]
            + [("total", card["cost"]["totals"]), ("missing entries", ", ".join(card["cost"]["missing"]) or "none")]
        ),
    ]
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(m['name'])} v{m['version']}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"


def add_review(cl: Any, mv: Any, review: dict[str, str]) -> bool:
    """Add a person's decision (``review``: decision, by, reason, at) to the card of model version
    ``mv`` and re-log its JSON and HTML; False when the version has no card (registered before cards)."""
    import tempfile

    if "model_card" not in (mv.tags or {}):
        return False
    with tempfile.TemporaryDirectory(prefix="recsys-card-") as tmp:
        card = json.loads(Path(cl.download_artifacts(mv.run_id, CARD_JSON, tmp)).read_text())
    card["review"] = dict(review)
    cl.log_dict(mv.run_id, card, CARD_JSON)
    cl.log_text(mv.run_id, render_html(card), CARD_HTML)
    return True


def write_card(
    cfg: PipelineConfig, cl: Any, name: str, version: str, run_id: str, snapshot_uri: str | None, tags: dict[str, Any]
) -> dict[str, Any]:
    """Build, log (JSON + HTML on the run) and tag the card; returns the card."""
    card = build_card(cfg, cl, name, version, run_id, snapshot_uri, tags)
    cl.log_dict(run_id, card, CARD_JSON)
    cl.log_text(run_id, render_html(card), CARD_HTML)
    uri = f"runs:/{run_id}/{CARD_HTML}"
    cl.set_model_version_tag(name, version, "model_card", uri)
    totals = card["cost"]["totals"]
    for key in ("wall_s", "cpu_s", "gpu_s", "price", "jobs"):
        cl.set_model_version_tag(name, version, f"cost.{key}", str(totals[key]))
    # ledger entries of the chain not found (a stage that ran in-process, or a lost entry)
    cl.set_model_version_tag(name, version, "cost.missing", str(len(card["cost"]["missing"])))
    return {**card, "uri": uri}
