"""The drift monitor: detector quality on generated worlds, and the job end to end with MLflow.

Curated days are written here the way ``jobs/ingest.py`` publishes them (typed Parquet, dedup
on ``event_id``, ``_SUCCESS`` manifest, ``_VALIDATION`` marker) but without Spark, and read
back through the job's own loader (``jobs.monitor.sections.load_day``). The "model" is the generator's
truth in force during the training window (user factors × beta, item factors, item bias), so
its recommendations are as good as they get before a change and decay exactly as the world
moves away from it; its offline recall is measured as the trainer does (``evaluate_arrays``
on the held-out day).

Detector quality (no MLflow): a 7-day reference window, then 24 stable days (false alarms
must be ≤ 1) and each generator drift scenario starting on a known day (the detector must fire
on the change day or the day after). A "fire" is the report's ``drift_alert``; the retrain
decision is checked too: taste shift (concept drift: marginals unchanged) is caught by the
online recall, a catalogue launch by data drift on ≥ 2 features, a popularity collapse by the
popularity feature and the recall, a device-mix change by the device feature only — the
model does not use the device, so it alerts without asking for a retrain.

Job end to end (real MLflow server, real subprocess): a stable day → report with plots, no
retrain, a monitoring run in ``<experiment>-monitoring``; the next day drifts → retrain with
the reason; a rerun is idempotent; a model without reference statistics and a day without
previous recommendations degrade to "unavailable" sections; bad inputs exit 2/3.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from jobs import sim as gen
from jobs.core import catalog, storage, tracking
from jobs.core import reference as ref
from jobs.core.partitions import write_recommendations
from jobs.core.results import MonitorResult, problems
from jobs.monitor import decision, sections
from jobs.monitor import job as monitor_job
from jobs.monitor import metrics as dm
from tests.curated import curate

pytestmark = pytest.mark.integration

START = date(2026, 1, 1)
WINDOW = 7
K = 10
REPO = Path(__file__).resolve().parents[2]


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module args`` in a fresh interpreter, as a task runs a job (conftest's environment)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "plugins")])}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


# ---- world helpers ------------------------------------------------------------------------


def positives(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    return sections.positive_pairs(table)


class OracleModel:
    """The truth of the training window as a model: the npz arrays of jobs/model.py."""

    def __init__(self, params: gen.WorldParams, window: list[pa.Table], last_day: date) -> None:
        truth = gen.world_on(params, last_day)
        pu = np.concatenate([positives(t)[0] for t in window])
        pi = np.concatenate([positives(t)[1] for t in window])
        self.user_ids = np.unique(pu)
        self.item_ids = np.unique(pi)
        self.user_factors = (params.beta * truth.user_factors[self.user_ids]).astype(np.float32)
        self.item_factors = truth.item_factors[self.item_ids].astype(np.float32)
        self.item_bias = truth.item_bias[self.item_ids].astype(np.float32)
        ui = np.searchsorted(self.user_ids, pu)
        ii = np.searchsorted(self.item_ids, pi)
        keys, weight = np.unique(ui * len(self.item_ids) + ii, return_counts=True)
        self.train_users = keys // len(self.item_ids)
        self.train_items = keys % len(self.item_ids)
        self.weights = weight.astype(np.float32)
        self.popularity = np.bincount(self.train_items, minlength=len(self.item_ids)).astype(np.int64)
        self.seen = (self.user_ids[self.train_users], self.item_ids[self.train_items])

    def arrays(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors, "item_factors": self.item_factors, "item_bias": self.item_bias}

    def recommend(self, users: np.ndarray, excluded: tuple[np.ndarray, np.ndarray], k: int = K) -> pa.Table:
        """Top-k unseen items per user (unknown users: popularity), as the scoring job serves them."""
        users = np.unique(users)
        rows = np.searchsorted(self.user_ids, users).clip(0, len(self.user_ids) - 1)
        known = self.user_ids[rows] == users
        scores = np.tile(self.popularity.astype(np.float32), (len(users), 1))
        scores[known] = self.user_factors[rows[known]] @ self.item_factors.T + self.item_bias
        eu = np.searchsorted(users, excluded[0]).clip(0, len(users) - 1)
        ei = np.searchsorted(self.item_ids, excluded[1]).clip(0, len(self.item_ids) - 1)
        hit = (users[eu] == excluded[0]) & (self.item_ids[ei] == excluded[1])
        scores[eu[hit], ei[hit]] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        return pa.table(
            {
                "user_id": pa.array(np.repeat(users, k), pa.int64()),
                "rank": pa.array(np.tile(np.arange(1, k + 1), len(users)), pa.int32()),
                "item_id": pa.array(self.item_ids[top].ravel(), pa.int64()),
                "score": pa.array(np.take_along_axis(scores, top, axis=1).ravel(), pa.float32()),
            }
        )

    def offline_recall(self, holdout: pa.Table) -> float:
        """Recall@K on the held-out day's new pairs, exactly as jobs.train evaluates a model."""
        from jobs.train.trainer import evaluate_arrays

        return evaluate_arrays(self.arrays(), self.train_data(holdout), K)[f"recall_at_{K}"]

    def train_data(self, holdout: pa.Table, uri: str = "", manifest: dict | None = None):
        from jobs.core.snapshots import TrainData

        hu, hi = positives(holdout)
        keep = np.isin(hu, self.user_ids) & np.isin(hi, self.item_ids)
        tu = np.searchsorted(self.user_ids, hu[keep])
        ti = np.searchsorted(self.item_ids, hi[keep])
        keys = np.unique(tu * len(self.item_ids) + ti)
        keys = keys[~np.isin(keys, self.train_users * len(self.item_ids) + self.train_items)]
        return TrainData(
            users=self.train_users,
            items=self.train_items,
            weights=self.weights,
            test_users=keys // len(self.item_ids),
            test_items=keys % len(self.item_ids),
            user_ids=self.user_ids,
            item_ids=self.item_ids,
            popularity=self.popularity,
            manifest=manifest or {},
            uri=uri,
        )


def thresholds(cfg) -> dict[str, float]:
    return monitor_job.thresholds(cfg)


# ---- detector quality ---------------------------------------------------------------------

WORLD = gen.WorldParams(users=2000, items=500, factors=8, seed=7, events_per_day=20_000)
STABLE_DAYS = 24
CHANGE = START + timedelta(days=WINDOW + 3)  # day 11: 3 monitored stable days before it


def _detector_day(cfg, model, reference, offline, day, tables, served_from):
    """Data drift + performance + decision of one day, through the job's own functions."""
    th = thresholds(cfg)
    today = sections.load_day(cfg, day.isoformat())
    tables[day] = today
    data = sections.data_drift(reference, None, today, th)
    prev = day - timedelta(days=1)
    excluded_days = [d for d in tables if served_from <= d <= prev]
    excl = (
        np.concatenate([model.seen[0], *[positives(tables[d])[0] for d in excluded_days]]),
        np.concatenate([model.seen[1], *[positives(tables[d])[1] for d in excluded_days]]),
    )
    recs = model.recommend(tables[prev].column("user_id").to_numpy(), excl)
    pos_u, pos_i = positives(today)
    result = dm.online_performance(
        recs.column("user_id").to_numpy(),
        recs.column("item_id").to_numpy(),
        recs.column("rank").to_numpy(),
        pos_u,
        pos_i,
        K,
        model.user_ids,
        model.item_ids,
        excl,
    )
    perf = {**sections.judge_performance(result, offline, K, th), "used_for_decision": True}
    return decision.decide(data, {"available": False}, perf, th), data, perf


@functools.lru_cache(maxsize=1)
def _trained_world():
    """Reference window days 1-7, held-out day 8, the oracle model and its offline recall (once)."""
    window = [gen.generate_day(WORLD, START + timedelta(days=i))[0] for i in range(WINDOW)]
    holdout_day = START + timedelta(days=WINDOW)
    holdout = gen.generate_day(WORLD, holdout_day)[0]
    model = OracleModel(WORLD, window, holdout_day - timedelta(days=1))
    reference = ref.compute_reference(
        [((START + timedelta(days=i)).isoformat(), t) for i, t in enumerate(window)],
        model.user_ids,
        model.item_ids,
        holdout=(holdout_day.isoformat(), holdout),
    )
    reference = ref.validate_reference(json.loads(ref.dumps_reference(reference)))
    return model, reference, model.offline_recall(holdout), holdout_day


@pytest.fixture
def detector_world(cfg):
    """The trained world with the held-out day published in this test's storage root."""
    model, reference, offline, holdout_day = _trained_world()
    return model, reference, offline, {holdout_day: curate(cfg, WORLD, holdout_day)}


def test_stable_world_raises_at_most_one_false_alarm(cfg, detector_world):
    model, reference, offline, tables = detector_world
    first = START + timedelta(days=WINDOW + 1)
    fired, retrain, worst = [], [], {}
    for i in range(STABLE_DAYS):
        day = first + timedelta(days=i)
        curate(cfg, WORLD, day)
        decision, data, perf = _detector_day(cfg, model, reference, offline, day, tables, first - timedelta(days=1))
        if decision["drift_alert"]:
            fired.append((day.isoformat(), decision["alerts"]))
        if decision["retrain"]:
            retrain.append(day.isoformat())
        for name, f in data["features"].items():
            worst[name] = max(worst.get(name, 0.0), f.get("psi") or f.get("increase") or 0.0)
        assert perf["verdict"] in ("ok", "alert"), perf
    assert len(fired) <= 1, fired
    assert len(retrain) <= 1, retrain
    # Effect sizes on 20k-event days stay far below the alert line (p-values would not).
    assert max(v for k, v in worst.items() if not k.startswith("unseen")) < 0.1, worst


@pytest.mark.parametrize(
    ("kind", "expect_retrain"),
    [("taste_shift", True), ("catalog_launch", True), ("popularity_collapse", True), ("device_mix", False)],
)
def test_each_drift_scenario_fires_within_two_days(cfg, detector_world, kind, expect_retrain):
    model, reference, offline, tables = detector_world
    params = gen.WorldParams(**{**WORLD.__dict__, "scenarios": (gen.Scenario(kind, CHANGE),)})
    served_from = START + timedelta(days=WINDOW)
    first = served_from + timedelta(days=1)
    outcomes = {}
    for day in [first + timedelta(days=i) for i in range((CHANGE - first).days + 2)]:
        curate(cfg, params, day)
        decision, data, perf = _detector_day(cfg, model, reference, offline, day, tables, served_from)
        outcomes[day] = (decision, data, perf)
    before = [d for d in outcomes if d < CHANGE]
    assert not any(outcomes[d][0]["drift_alert"] for d in before), {d: outcomes[d][0] for d in before}
    fired = [d for d in outcomes if d >= CHANGE and outcomes[d][0]["drift_alert"]]
    assert fired and (fired[0] - CHANGE).days <= 1, {d: outcomes[d][0]["reason"] for d in outcomes}
    decision = outcomes[fired[0]][0]
    assert decision["retrain"] is expect_retrain, decision
    alerts = set(outcomes[fired[0]][0]["alerts"])
    expected = {
        "taste_shift": {"performance"},
        "catalog_launch": {"unseen_items", "item_popularity"},
        "popularity_collapse": {"item_popularity"},
        "device_mix": {"device"},
    }[kind]
    assert expected <= alerts, alerts


# ---- the job end to end -------------------------------------------------------------------

SMALL = gen.WorldParams(users=600, items=200, factors=6, seed=21, events_per_day=6000)


def log_model(cfg, model: OracleModel, holdout: pa.Table, snapshot_dir: Path | None, reference_json: str | None):
    """Log the oracle as jobs.train does (Tracker), register it and make it champion; returns version."""
    import torch

    from jobs.registry.aliases import promote
    from jobs.registry.register import register
    from jobs.train.tracking import Tracker
    from jobs.train.trainer import DistContext, Hparams

    manifest = {"day": "holdout"}
    uri = ""
    if snapshot_dir is not None and reference_json is not None:
        snapshot_dir.mkdir(parents=True, exist_ok=True)
        (snapshot_dir / "reference_stats.json").write_text(reference_json)
        manifest["reference_stats"] = "reference_stats.json"
        uri = str(snapshot_dir)
    data = model.train_data(holdout, uri=uri, manifest=manifest)
    tracker = Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    run_id = tracker.start(None, "oracle")
    tracker.log_setup(data, Hparams(), DistContext(device=torch.device("cpu")), {"k": K})
    from jobs.train.trainer import evaluate_arrays

    metrics = evaluate_arrays(model.arrays(), data, K)
    info = tracker.log_model(model.arrays(), data, K)
    tracker.finish(metrics, {"run_id": run_id})
    version = register(cfg, run_id, {}, model_uri=info.model_uri)["version"]
    current = __import__("jobs.registry.aliases", fromlist=["show"]).show(cfg)["champion"]
    promote(cfg, version, current, "test", "pytest")
    return version, run_id, metrics[f"recall_at_{K}"]


def write_recs(cfg, day: date, recs: pa.Table, version: str, run_id: str, source_days: list[str]) -> None:
    """A recommendations partition exactly in the scoring contract's format."""
    n = recs.num_rows
    table = recs.append_column("model_version", pa.array([version] * n, pa.string())).append_column(
        "model_run_id", pa.array([run_id] * n, pa.string())
    )
    part = cfg.storage.partition("recommendations", day)
    write_recommendations(
        part, table, day=day.isoformat(), model_name=cfg.mlflow.model_name, k=K, source_days=source_days, seconds=0.1
    )


def serve(cfg, model: OracleModel, tables: dict, day: date, version: str, run_id: str, window_end: date) -> None:
    """Score day ``day``'s active users with the exclusions the scoring job applies."""
    days = sorted(d for d in tables if window_end < d <= day)
    excl = (
        np.concatenate([model.seen[0], *[positives(tables[d])[0] for d in days]]),
        np.concatenate([model.seen[1], *[positives(tables[d])[1] for d in days]]),
    )
    recs = model.recommend(tables[day].column("user_id").to_numpy(), excl)
    write_recs(cfg, day, recs, version, run_id, [d.isoformat() for d in days])


def _mlflow_client(cfg):
    from jobs.core.tracking import client

    return client(cfg)


def test_job_reports_a_stable_day_then_a_drifted_day_and_logs_to_mlflow(mlflow_env, cfg, tmp_path):
    change = START + timedelta(days=7)
    params = gen.WorldParams(
        **{
            **SMALL.__dict__,
            "scenarios": (gen.Scenario("device_mix", change), gen.Scenario("catalog_launch", change, 0.3)),
        }
    )
    tables = {START + timedelta(days=i): curate(cfg, params, START + timedelta(days=i)) for i in range(8)}
    window_end = START + timedelta(days=3)
    holdout_day = START + timedelta(days=4)
    window_days = [START + timedelta(days=i) for i in range(4)]
    model = OracleModel(params, [tables[d] for d in window_days], window_end)
    from jobs.snapshot.job import reference_stats

    reference_json = reference_stats(
        cfg,
        [d.isoformat() for d in window_days],
        holdout_day,
        pa.table({"user_id": model.user_ids}),
        pa.table({"item_id": model.item_ids}),
    )
    version, run_id, offline = log_model(cfg, model, tables[holdout_day], tmp_path / "snapshot", reference_json)
    for d in (holdout_day, START + timedelta(days=5), START + timedelta(days=6), change):
        serve(cfg, model, tables, d, version, run_id, window_end)

    stable_day = START + timedelta(days=6)
    proc = run_module("jobs.monitor", "--day", stable_day.isoformat(), "--result-file", str(tmp_path / "r1.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r1.json").read_text())
    assert problems(MonitorResult, result) == []  # the result file is the declared contract
    assert result["retrain"] is False, result["reason"]
    assert result["drift_alert"] is False, result
    report = json.loads(Path(result["report_json"]).read_text())
    assert report["model_version"] == version and report["reference"]["available"]
    assert report["data_drift"]["alerts"] == []
    assert set(report["data_drift"]["features"]) == set(ref.FEATURES)
    perf = report["performance"]
    assert perf["available"] and perf["recs_day"] == (stable_day - timedelta(days=1)).isoformat()
    assert perf["offline_recall"] == pytest.approx(offline)
    assert perf["users"] >= 50 and perf["hit_rate"] > 0 and abs(perf["decay"]) < 0.3, perf
    assert report["prediction_drift"]["reference_day"] == holdout_day.isoformat()
    assert report["prediction_drift"]["score"]["psi"] < 0.25
    page = Path(result["report_html"]).read_text()
    assert page.count('<img src="data:image/png;base64,') >= 3  # 2 closest features + trend
    assert "no retrain" in page
    assert storage.read_manifest(str(Path(result["report_html"]).parent))["files"] == ["report.json", "report.html"]

    cl = _mlflow_client(cfg)
    run = cl.get_run(result["run_id"])
    assert run.data.tags["recsys.day"] == stable_day.isoformat()
    assert run.data.tags["recsys.model_version"] == version
    assert cl.get_experiment(run.info.experiment_id).name == f"{cfg.mlflow.experiment}-monitoring"
    assert {a.path for a in cl.list_artifacts(result["run_id"], "drift")} == {"drift/report.json", "drift/report.html"}
    assert run.data.metrics["features_in_alert"] == 0

    proc = run_module("jobs.monitor", "--day", change.isoformat(), "--result-file", str(tmp_path / "r2.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result2 = json.loads((tmp_path / "r2.json").read_text())
    assert result2["retrain"] is True
    assert {"device", "unseen_items", "item_popularity"} <= set(result2["drifted_features"])
    assert "data drift on" in result2["reason"]
    report2 = json.loads(Path(result2["report_json"]).read_text())
    assert [t["day"] for t in report2["trend"]] == [stable_day.isoformat(), change.isoformat()]
    page2 = Path(result2["report_html"]).read_text()
    assert "RETRAIN" in page2 and "device — drifted feature" in page2

    # A rerun of a day replaces its report and reuses its monitoring run.
    proc = run_module("jobs.monitor", "--day", change.isoformat(), "--result-file", str(tmp_path / "r3.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "r3.json").read_text())["run_id"] == result2["run_id"]
    monitoring = cl.get_experiment_by_name(f"{cfg.mlflow.experiment}-monitoring")
    assert len(cl.search_runs([monitoring.experiment_id])) == 2

    # Cooldown input: the oracle's "training" run is the latest finished training run.
    end, last_run = tracking.last_training_end(cfg)
    assert last_run == run_id and end is not None


def test_missing_reference_or_previous_recs_degrade_and_bad_input_is_refused(mlflow_env, cfg, tmp_path, capsys):
    tables = {START + timedelta(days=i): curate(cfg, SMALL, START + timedelta(days=i)) for i in range(4)}
    model = OracleModel(SMALL, [tables[START], tables[START + timedelta(days=1)]], START + timedelta(days=1))
    version, run_id, _ = log_model(cfg, model, tables[START + timedelta(days=2)], None, None)
    day = START + timedelta(days=3)
    serve(cfg, model, tables, day, version, run_id, START + timedelta(days=1))

    proc = run_module("jobs.monitor", "--day", day.isoformat(), "--result-file", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "r.json").read_text())
    report = json.loads(Path(result["report_json"]).read_text())
    assert report["data_drift"]["available"] is False
    assert "has no reference/reference_stats.json artifact" in report["data_drift"]["reason"]
    assert report["performance"]["available"] is False
    assert f"no recommendations partition for dt={START + timedelta(days=2)}" in report["performance"]["reason"]
    assert report["prediction_drift"]["available"] and report["prediction_drift"]["verdict"] == "reference"
    assert result["retrain"] is False and "unavailable" in result["reason"]
    assert "unavailable: model version" in Path(result["report_html"]).read_text()

    missing = run_module("jobs.monitor", "--day", "2026-02-01", "--model-version", version)
    assert missing.returncode == 3 and "curated day dt=2026-02-01 is not published" in missing.stderr
    unscored = (START + timedelta(days=2)).isoformat()
    unknown = run_module("jobs.monitor", "--day", unscored, "--model-version", "999")
    assert unknown.returncode == 2 and "has no version '999'" in unknown.stderr
    other = run_module("jobs.monitor", "--day", day.isoformat(), "--model-version", str(int(version) + 1))
    assert other.returncode == 2 and f"were served by model version {version}" in other.stderr
    for bad in ("2026-13-01", f"{day},{day + timedelta(days=1)}"):  # not a calendar day; not one day
        with pytest.raises(SystemExit) as refused:
            monitor_job.main(["--day", bad])
        assert (
            refused.value.code == 2
            and f"argument --day: invalid fromisoformat value: '{bad}'" in capsys.readouterr().err
        )
    assert not storage.local_path(catalog.report_dir(cfg, "drift", "2026-02-01")).exists()
