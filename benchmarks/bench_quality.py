"""Ranking quality on real data: NDCG@10 and Recall@10 of every model family the product trains
(MF, EASE, the sequential SASRec, each through its own trainer and export) against baselines and
``implicit``, under two protocols, with paired 95% CIs.

Data: ML-100K (``jobs.importer.datasets.ml100k``, every rating an implicit interaction), and
also the MovieLens file named by ``$RECSYS_MOVIELENS`` (``python -m benchmarks --only quality
--movielens PATH``: RecBole ``.inter``, ML-1M ``ratings.dat`` or ML-20M+ ``ratings.csv``).

Evaluation: full ranking over the catalogue (never sampled negatives), the items the model was
fitted on excluded per user, ``jobs.core.ranking.ranking_metrics`` per user.

(a) **temporal** (the project's own): ``N_SPLITS`` rolling cut days, ``PERIOD_DAYS`` apart, the
    last test period ending on the last day. For cut day ``c``: the model is tuned by fitting the
    grid on everything before ``c - 14`` and scoring the validation period ``[c - 14, c)``; the
    chosen setting is refitted on everything before ``c`` (train + valid) and scored on the test
    period ``[c, c + 14)``. Truth: a period's pairs whose user and item occur in the fitted data,
    minus the pairs seen there (new users and items count for no model); items absent from the
    fitted data are not recommendable. Each split chooses its own settings on its own validation
    period; the test periods are pooled over splits (a user in two splits is two units).
    Consecutive splits share data: split j's train + valid is split j+1's train, so one fit
    serves both (fits are cached per training log and setting).
(b) **RecBole's** ML-100K protocol (``recbole/properties/overall.yaml`` of recbole 1.2.1:
    ``order: RO``, ``split: {RS: [0.8, 0.1, 0.1]}``, ``group_by: user``, ``mode: full``; the
    quick start loads ``[user_id, item_id]``, i.e. all ratings): a seeded shuffle, each user's
    interactions cut 8:1:1 with RecBole's rounding. Models fit on train only; valid (train items
    excluded) tunes, test (train + valid items excluded, as RecBole's full-sort evaluator does)
    reports. Our shuffle is numpy's, not RecBole's torch permutation, so the split differs.

Tuning is a seeded grid on validation NDCG@10 (``_grids``; the MF trainer in two stages to fit
the time budget; the machinery is ``quality_tuning``, the pure pieces ``quality_protocol``). The best baseline (popularity or recent popularity, whichever has the higher
validation NDCG) is every row's reference; CIs are a paired percentile bootstrap over evaluated
users (``N_BOOT`` resamples, seeded). The run fails when a split leaks, a period has no
evaluated user, a metric is not finite, or EASE does not beat popularity on validation (a
broken evaluation, not a result).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see jobs/train/job.py

import numpy as np

from benchmarks import quality_models as qm
from benchmarks.quality_protocol import Interactions, load_interactions, paired_bootstrap_ci
from benchmarks.quality_tuning import Family, K, Outcome, Protocol, recbole_protocol, run_protocol, temporal_protocol

SEED = 42
N_SPLITS = {"full": 5, "quick": 2}
N_BOOT = {"full": 2000, "quick": 300}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV_DATA = "RECSYS_MOVIELENS"

# RecBole's published BPR figures on ML-100K under its default protocol (RO, RS 8:1:1, full
# ranking), test-set metrics of the model chosen on validation MRR@10.
PUBLISHED = [
    {
        "source": "RecBole docs, Parameter Tuning page (docs/source/user_guide/usage/parameter_tuning.rst): "
        "BPR best params embedding_size 64, learning_rate 0.001, 'test_result'",
        "recall": 0.2368,
        "ndcg": 0.2768,
        "valid_recall": 0.2169,
        "valid_ndcg": 0.235,
    },
    {
        "source": "RecBole docs, Quick Start page (docs/source/get_started/quick_start.rst): BPR, "
        "embedding_size 64, 'test result'",
        "recall": 0.2523,
        "ndcg": 0.292,
        "valid_recall": 0.2195,
        "valid_ndcg": 0.2344,
    },
]


# ---- models and their grids ------------------------------------------------------------------


def _one(make: Callable[..., qm.Scorer]):
    def fit(data: qm.FitData, group: dict[str, Any]):
        yield group, make(data, **group)

    return fit


def _epochs(group: dict[str, Any]) -> list[int]:
    value = group["epochs"]
    return list(value) if isinstance(value, list | tuple) else [value]


def _fit_bpr(data: qm.FitData, group: dict[str, Any]):
    base = {k: v for k, v in group.items() if k != "iterations"}
    its = group["iterations"]
    for n, scorer in qm.implicit_bpr_checkpoints(data, iterations=its if isinstance(its, list) else [its], **base):
        yield {**base, "iterations": n}, scorer


def _fit_ease_recent(data: qm.FitData, group: dict[str, Any]):
    for n, a, scorer in qm.ease_recent_checkpoints(data, group["lam"], _listed(group["days"]), _listed(group["alpha"])):
        yield {**group, "days": n, "alpha": a}, scorer


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _fit_mf(data: qm.FitData, group: dict[str, Any]):
    from jobs.train.trainer import Hparams

    base = {k: v for k, v in group.items() if k != "epochs"}
    epochs = _epochs(group)
    for n, scorer in qm.mf_checkpoints(data, Hparams(**base, epochs=max(epochs)), epochs):
        yield {**base, "epochs": n}, scorer


def _fit_seq(data: qm.FitData, group: dict[str, Any]):
    from jobs.seq.trainer import Hparams

    base = {k: v for k, v in group.items() if k != "epochs"}
    epochs = _epochs(group)
    for n, scorer in qm.seq_checkpoints(data, Hparams(**base, epochs=max(epochs)), epochs):
        yield {**base, "epochs": n}, scorer


def shipped_ease() -> dict[str, Any]:
    """The EASE family's shipped settings (``training.ease_l2``, ``ease_recent_days``, the
    ``ease_recent_weights`` α is chosen among per fit on ``ease_recent_valid_days``, ``K``) as
    ``qm.ease_recent_shipped`` takes them."""
    from jobs.core.config import get_config

    t = get_config().training
    return {
        "lam": t.ease_l2,
        "days": t.ease_recent_days,
        "weights": tuple(t.ease_recent_weights),
        "k": K,
        "valid_days": t.ease_recent_valid_days,
    }


def shipped_hparams() -> dict[str, Any]:
    """The trainer's defaults as ``python -m jobs.train`` runs them (config + CLI defaults)."""
    from dataclasses import asdict

    from jobs.core.config import get_config
    from jobs.train.job import build_parser, hparams

    hp = asdict(hparams(build_parser(get_config()).parse_args(["--snapshot", "-"])))
    hp.pop("max_seconds_per_epoch")
    return hp


def families(quick: bool) -> list[Family]:
    """The compared models with their grids (smaller with ``quick``)."""
    g = _grids(quick)
    shipped = shipped_hparams()

    def mf_stage2(best: dict[str, Any] | None) -> list[dict[str, Any]]:
        base = {**best, "epochs": g["mf_epochs"]}
        return [{**base, **change} for change in g["mf_stage2"]]

    return [
        Family("popularity", _one(lambda d: qm.popularity(d)), [lambda _: [{}]], baseline=True),
        Family(
            "recent popularity",
            _one(qm.recent_popularity),
            [lambda _: [{"days": n} for n in g["recent_days"]]],
            baseline=True,
        ),
        Family("EASE", _one(qm.ease), [lambda _: [{"lam": lam} for lam in g["ease_lambda"]]]),
        Family("EASE + recency prior (shipped)", _one(qm.ease_recent_shipped), [lambda _: [shipped_ease()]]),
        Family(
            "EASE + recency prior (tuned)",
            _fit_ease_recent,
            [lambda _: [{"lam": lam, "days": g["prior_days"], "alpha": g["prior_alpha"]} for lam in g["ease_lambda"]]],
        ),
        Family(
            "implicit ALS",
            _one(qm.implicit_als),
            [
                lambda _: [
                    {"factors": f, "regularization": r, "alpha": a, "iterations": g["als_iterations"], "seed": SEED}
                    for f, r, a in product(g["als_factors"], g["als_reg"], g["als_alpha"])
                ]
            ],
        ),
        Family(
            "implicit BPR",
            _fit_bpr,
            [
                lambda _: [
                    {"factors": g["bpr_factors"], "learning_rate": lr, "regularization": r, "iterations": g["bpr_its"]}
                    | {"seed": SEED}
                    for lr, r in product(g["bpr_lr"], g["bpr_reg"])
                ]
            ],
        ),
        Family("mf (shipped defaults)", _fit_mf, [lambda _: [shipped]]),
        Family(
            "seq (SASRec)",
            _fit_seq,
            [
                lambda _: [
                    {"lr": lr, "dropout": p, "epochs": g["seq_epochs"], "seed": SEED}
                    for lr, p in product(g["seq_lr"], g["seq_dropout"])
                ]
            ],
        ),
        Family(
            "mf (tuned)",
            _fit_mf,
            [lambda _: [{**shipped, **point, "epochs": g["mf_epochs"]} for point in g["mf_stage1"]], mf_stage2],
        ),
    ]


def _grids(quick: bool) -> dict[str, Any]:
    full = {
        "recent_days": [7, 14, 28, 56],
        "ease_lambda": [50, 100, 200, 500, 1000, 2000],
        # the recency prior's window and weight (α = 0: plain EASE), every pair on one EASE fit
        "prior_days": [7, 14, 28],
        "prior_alpha": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
        "als_factors": [64, 128],
        "als_reg": [0.1, 1.0],
        "als_alpha": [1.0, 5.0, 20.0],
        "als_iterations": 15,
        "bpr_factors": 64,
        "bpr_lr": [0.005, 0.01],
        "bpr_reg": [0.01, 0.03],
        "bpr_its": [50, 100, 200],
        # stage 1: loss x learning rate at 64 factors, weight decay 1e-2; stage 2: from the best
        # of stage 1, 128 factors, or weight decay 1e-3. Epochs are checkpoints of each run.
        "mf_stage1": [
            {"loss": loss, "lr": lr, "weight_decay": 1e-2, "factors": 64, "negatives": neg}
            for (loss, neg), lr in product([("bpr", 4), ("softmax", 8)], [0.005, 0.02])
        ],
        "mf_stage2": [{"factors": 128}, {"weight_decay": 1e-3}],
        "mf_epochs": [5, 10, 20],
        # the sequential family at its shipped architecture (jobs.seq.trainer.Hparams: 2 blocks,
        # 64 hidden, the last 50 items, full softmax); epochs are checkpoints of each run
        "seq_lr": [1e-3, 3e-3],
        "seq_dropout": [0.2],
        "seq_epochs": [10, 20, 30],
    }
    if not quick:
        return full
    return {
        **full,
        "recent_days": [14, 28],
        "ease_lambda": [200, 500],
        "prior_days": [14],
        "prior_alpha": [0.0, 2.0],
        "als_factors": [64],
        "als_reg": [0.1],
        "als_alpha": [5.0],
        "bpr_lr": [0.005],
        "bpr_reg": [0.01],
        "bpr_its": [50, 100],
        "mf_stage1": full["mf_stage1"][2:3],
        "mf_stage2": [],
        "mf_epochs": [5, 10],
        "seq_lr": [1e-3],
        "seq_dropout": [0.2],
        "seq_epochs": [5, 10],
    }


MF_KEYS = ("loss", "negatives", "factors", "lr", "weight_decay", "epochs")


def _settings_note(settings: list[dict[str, Any]]) -> str:
    """The settings chosen per split, most frequent first ("3/5: ...") when they differ."""

    def short(s: dict[str, Any]) -> str:
        keys = MF_KEYS if "use_weights" in s else [k for k in s if k != "seed"]
        return ", ".join(f"{k}={s[k]}" for k in keys) or "-"

    counts = Counter(short(s) for s in settings)
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{n}/{len(settings)}: {text}" for text, n in counts.most_common())


def summarise(
    dataset: str, protocol: Protocol, outcomes: list[Outcome], baselines: set[str], n_boot: int
) -> list[dict[str, Any]]:
    """One record per model: test means, paired CIs against the best baseline (the one of
    ``baselines`` with the highest validation NDCG), settings."""
    by_name = {o.family: o for o in outcomes}
    best = max((o for o in outcomes if o.family in baselines), key=lambda o: o.valid["ndcg"].mean())
    if by_name["EASE"].valid["ndcg"].mean() <= by_name["popularity"].valid["ndcg"].mean():
        raise AssertionError(f"{dataset} {protocol.name}: EASE does not beat popularity on validation")
    records = []
    for o in outcomes:
        record = {
            "dataset": dataset,
            "protocol": protocol.name,
            "model": o.family,
            "baseline": best.family,
            "users": len(o.test["ndcg"]),
            "settings": _settings_note(o.settings),
            "settings_per_split": o.settings,
        }
        for m in ("ndcg", "recall"):
            diff, low, high = paired_bootstrap_ci(o.test[m], best.test[m], n_boot=n_boot, seed=SEED)
            record |= {
                f"valid_{m}": float(o.valid[m].mean()),
                m: float(o.test[m].mean()),
                f"{m}_diff": diff,
                f"{m}_ci": [low, high],
            }
            if not all(np.isfinite([record[m], diff, low, high])):
                raise FloatingPointError(f"{dataset} {protocol.name} {o.family}: {m} is not finite")
        records.append(record)
    return records


def table(records: list[dict[str, Any]], descriptions: dict[str, str]) -> str:
    lines = []
    for (dataset, protocol), desc in descriptions.items():
        rows = [r for r in records if r["dataset"] == dataset and r["protocol"] == protocol]
        base = rows[0]["baseline"]
        lines += [
            f"**{dataset}, {protocol}** ({desc}; {rows[0]['users']:,} evaluated users; Δ = model − {base}, "
            "paired bootstrap 95% CI)",
            "",
            f"| model | NDCG@{K} | Δ NDCG [95% CI] | Recall@{K} | Δ Recall [95% CI] | valid NDCG | settings |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            d_n, d_r = (
                f"{r[m + '_diff']:+.4f} [{r[m + '_ci'][0]:+.4f}, {r[m + '_ci'][1]:+.4f}]" for m in ("ndcg", "recall")
            )
            settings = r["settings"].replace("|", "\\|")
            lines.append(
                f"| {r['model']} | {r['ndcg']:.4f} | {d_n} | {r['recall']:.4f} | {d_r} | {r['valid_ndcg']:.4f} | {settings} |"
            )
        if protocol == "recbole" and dataset == "ml-100k":
            lines += ["", "Published (RecBole's BPR on ML-100K, same protocol, its own split):", ""]
            lines += [
                f"* NDCG@{K} {p['ndcg']}, Recall@{K} {p['recall']} (valid NDCG {p['valid_ndcg']}, Recall "
                f"{p['valid_recall']}): {p['source']}"
                for p in PUBLISHED
            ]
        lines.append("")
    return "\n".join(lines)


def datasets() -> list[Interactions]:
    from jobs.importer.datasets import ml100k

    out = [load_interactions(ml100k())]
    if os.environ.get(ENV_DATA):
        out.append(load_interactions(os.environ[ENV_DATA]))
    return out


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Both protocols on every data set; writes ``results/quality.{md,json}``; returns result rows."""
    mode = "quick" if quick else "full"
    fams = families(quick)
    records, descriptions, rows = [], {}, []
    for d in datasets():
        for protocol in (temporal_protocol(d, N_SPLITS[mode]), recbole_protocol(d)):
            descriptions[(d.name, protocol.name)] = protocol.description
            outcomes = run_protocol(protocol, fams)
            records += summarise(d.name, protocol, outcomes, {f.name for f in fams if f.baseline}, N_BOOT[mode])
    for r in records:
        for m, label in (("ndcg", f"NDCG@{K}"), ("recall", f"Recall@{K}")):
            low, high = r[f"{m}_ci"]
            rows.append(
                {
                    "metric": f"{r['dataset']} {r['protocol']} {label}: {r['model']} vs {r['baseline']}",
                    "value": r[m],
                    "unit": m,
                    "reference": next(
                        x[m]
                        for x in records
                        if x["dataset"] == r["dataset"]
                        and x["protocol"] == r["protocol"]
                        and x["model"] == r["baseline"]
                    ),
                    "note": f"Δ {r[f'{m}_diff']:+.4f} [{low:+.4f}, {high:+.4f}] paired 95% CI, {r['users']} users; "
                    f"{r['settings']}",
                }
            )
    ours = {r["model"]: r for r in records if r["dataset"] == "ml-100k" and r["protocol"] == "recbole"}
    for p in PUBLISHED[:1]:
        for model in ("implicit BPR", "mf (tuned)", "EASE"):
            for m, label in (("ndcg", f"NDCG@{K}"), ("recall", f"Recall@{K}")):
                rows.append(
                    {
                        "metric": f"ml-100k recbole {label}: {model} (ours) vs RecBole BPR (published)",
                        "value": ours[model][m],
                        "unit": m,
                        "reference": p[m],
                        "note": p["source"],
                    }
                )
    text = table(records, descriptions)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "quality.md").write_text(
        f"# Ranking quality ({mode}, {stamp})\n\nWritten by `python -m benchmarks --only quality`.\n\n{text}"
    )
    (RESULTS_DIR / "quality.json").write_text(
        json.dumps({"mode": mode, "finished": stamp, "records": records, "published": PUBLISHED}, indent=2, default=str)
    )
    print(text, flush=True)
    return rows


if __name__ == "__main__":
    import sys

    for row in run(quick="--quick" in sys.argv):
        print(json.dumps(row))
