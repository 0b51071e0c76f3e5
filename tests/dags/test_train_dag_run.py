"""The training DAG end to end with ``dag.test()``: real Spark, torch, MLflow server."""

from __future__ import annotations

from datetime import date, timedelta

import pendulum
import pytest

from jobs import sim as gen
from jobs.core.config import get_config
from jobs.core.tracking import CHAMPION, client
from jobs.ingest.job import ingest_day
from jobs.registry.aliases import show
from jobs.validate.job import validate_day
from tests.dag_runs import dag_test, xcom

pytestmark = pytest.mark.integration

START = date(2026, 1, 1)
DAYS = 5


def test_first_training_run_is_gated_registered_and_promoted(airflow_db, mlflow_env, cfg, spark):
    params = gen.WorldParams(users=300, items=120, factors=4, seed=17, events_per_day=4000)
    gen.generate(params, START, DAYS, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    for i in range(DAYS):
        ingest_day(cfg, spark, START + timedelta(days=i))
        assert validate_day(cfg, START + timedelta(days=i))["success"]
    run = dag_test(
        "recsys_train",
        logical_date=pendulum.datetime(2026, 1, 6, tz="UTC"),
        run_conf={"epochs": 4, "window_days": 4, "day": (START + timedelta(days=DAYS - 1)).isoformat()},
    )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    evaluation = xcom(run, "evaluate")
    metrics = evaluation["metrics"]
    k = evaluation["k"]
    assert evaluation["champion_version"] is None
    assert metrics["challenger"][f"ndcg_at_{k}"] > metrics["popularity"][f"ndcg_at_{k}"]
    assert "oracle" in metrics
    assert evaluation["blessed"] is True, evaluation["reason"]
    assert states["promote"] == "success"
    registered = xcom(run, "register")
    aliases = show(get_config())
    assert aliases[CHAMPION] == registered["version"]
    tags = client(get_config()).get_model_version(get_config().mlflow.model_name, registered["version"]).tags
    assert tags["decision"] == "promoted"
    assert (tags["window_start"], tags["window_end"]) == ("2026-01-01", "2026-01-04")
    assert tags["airflow_run_id"] == run.run_id
    train = xcom(run, "train")
    assert train["run_id"] and train["model_uri"]

    # A worse challenger on the same data (1 epoch vs the champion's 4): the champion rule
    # alone decides (floor and popularity lift off, no tolerance), so the gate must refuse it, the
    # promotion is skipped and `champion` does not move; the version is still registered.
    import os

    os.environ["RECSYS__GATE__MIN_RECALL"] = "0"
    os.environ["RECSYS__GATE__MIN_LIFT_OVER_POPULARITY"] = "0"
    os.environ["RECSYS__GATE__MAX_REGRESSION_VS_CHAMPION"] = "0"
    try:
        worse = dag_test(
            "recsys_train",
            logical_date=pendulum.datetime(2026, 1, 7, tz="UTC"),
            run_conf={"epochs": 1, "window_days": 4, "day": (START + timedelta(days=DAYS - 1)).isoformat()},
        )
    finally:
        for key in ("MIN_RECALL", "MIN_LIFT_OVER_POPULARITY", "MAX_REGRESSION_VS_CHAMPION"):
            del os.environ[f"RECSYS__GATE__{key}"]
    worse_states = {ti.task_id: str(ti.state) for ti in worse.get_task_instances()}
    second = xcom(worse, "evaluate")
    assert second["champion_version"] == registered["version"]
    assert second["blessed"] is False, second
    assert "champion" in second["reason"], second["reason"]
    assert second["metrics"]["challenger"][f"ndcg_at_{k}"] < second["metrics"]["champion"][f"ndcg_at_{k}"]
    assert worse_states["infra_validate"] == "success"
    assert worse_states["promote"] == "skipped", worse_states
    after = show(get_config())
    assert after[CHAMPION] == registered["version"]
    challenger = xcom(worse, "register")["version"]
    assert challenger != registered["version"]
    assert after["challenger"] == challenger
    assert client(get_config()).get_model_version(get_config().mlflow.model_name, challenger).tags["decision"] == (
        "not_blessed"
    )

    # Caching: the same inputs again (snapshot content, code, parameters — epochs 4 as the
    # champion's run) register nothing and promote nothing; force_retrain trains anyway.
    conf = {"epochs": 4, "window_days": 4, "day": (START + timedelta(days=DAYS - 1)).isoformat()}
    versions_before = len(client(get_config()).search_model_versions(f"name='{get_config().mlflow.model_name}'"))
    cached = dag_test("recsys_train", logical_date=pendulum.datetime(2026, 1, 8, tz="UTC"), run_conf=conf)
    cached_states = {ti.task_id: str(ti.state) for ti in cached.get_task_instances()}
    assert str(cached.state) == "success", cached_states
    hit = xcom(cached, "train")
    assert hit["cached"] is True and hit["cached_version"] == registered["version"], hit
    assert hit["cache_key"] == tags["cache_key"]
    assert {t: cached_states[t] for t in ("evaluate", "register", "promote")} == dict.fromkeys(
        ("evaluate", "register", "promote"), "skipped"
    )
    assert (
        len(client(get_config()).search_model_versions(f"name='{get_config().mlflow.model_name}'")) == versions_before
    )
    assert show(get_config()) == after
    forced = dag_test(
        "recsys_train", logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"), run_conf={**conf, "force_retrain": True}
    )
    forced_train = xcom(forced, "train")
    assert forced_train["cached"] is False and forced_train["cache_key"] == hit["cache_key"]
    assert xcom(forced, "register")["version"] not in (registered["version"], challenger)
