"""The training DAG end to end with ``dag.test()``: real Spark, torch, MLflow server; the MF and
EASE families compete for one champion, then the sequential family alone challenges it."""

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
DAYS = 6  # the first runs train on days 1-4 and hold out day 5; day 6 joins the evidence as a replay day


def test_first_training_run_is_gated_registered_and_promoted(airflow_db, mlflow_env, cfg, spark):
    params = gen.WorldParams(users=300, items=120, factors=4, seed=17, events_per_day=4000)
    gen.generate(params, START, DAYS, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    for i in range(DAYS):
        ingest_day(cfg, spark, START + timedelta(days=i))
        assert validate_day(cfg, START + timedelta(days=i))["success"]
    run = dag_test(
        "recsys_train",
        logical_date=pendulum.datetime(2026, 1, 6, tz="UTC"),
        run_conf={"epochs": 4, "window_days": 4, "day": "2026-01-05", "replay_days": 1},
    )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert str(run.state) == "success", states
    # the run's families (default training.families): seq is built but not trained, nor gated
    assert states["select_families"] == "success" and xcom(run, "plan")["families"] == ["mf", "ease"]
    assert states["train_seq"] == states["fresh_seq"] == states["evaluate_seq"] == "skipped", states
    # Both families were gated on the same evidence — the held-out day and one replay day after
    # it (no champion yet, so no day is skipped) — and the tournament's winner is the champion.
    gates = {f: xcom(run, f"evaluate_{f}") for f in ("mf", "ease")}
    assert gates["mf"]["evidence"]["users"] == gates["ease"]["evidence"]["users"] > 0
    for gate in gates.values():
        assert [row["day"] for row in gate["evidence"]["days"]] == ["2026-01-05", "2026-01-06"], gate["evidence"]
        assert gate["evidence"]["skipped"] == {}
    evaluation = xcom(run, "tournament")
    winner, k = evaluation["winner"], evaluation["k"]
    assert evaluation["metrics"] == gates[winner]["metrics"] and evaluation["run_id"] == gates[winner]["run_id"]
    metrics = evaluation["metrics"]
    assert evaluation["champion_version"] is None
    assert metrics["challenger"][f"ndcg_at_{k}"] > metrics["popularity"][f"ndcg_at_{k}"]
    assert "oracle" in metrics
    assert evaluation["blessed"] is True, evaluation["reason"]
    pooled = {f: g["evidence"]["pooled"]["challenger"][f"ndcg_at_{k}"] for f, g in gates.items()}
    assert all(pooled[winner] >= pooled[f] for f, g in gates.items() if g["blessed"]), (winner, pooled)
    assert states["promote"] == "success"
    registered = xcom(run, "register")
    aliases = show(get_config())
    assert aliases[CHAMPION] == registered["version"]
    name = get_config().mlflow.model_name
    tags = client(get_config()).get_model_version(name, registered["version"]).tags
    assert tags["decision"] == "promoted" and tags["family"] == winner
    assert (tags["window_start"], tags["window_end"]) == ("2026-01-01", "2026-01-04")
    assert tags["airflow_run_id"] == run.run_id
    # Every candidate is a version of the one model, in family order; the loser says why it lost.
    assert [c["family"] for c in registered["candidates"]] == ["mf", "ease"]
    (loser,) = [c for c in registered["candidates"] if c["family"] != winner]
    loser_tags = client(get_config()).get_model_version(name, loser["version"]).tags
    assert loser_tags["family"] == loser["family"] and loser_tags["decision"] in ("lost_tournament", "not_blessed")
    if loser_tags["decision"] == "lost_tournament":
        assert loser_tags["decision_reason"].startswith(f"lost the tournament to {winner}: pooled ndcg@{k}")
    else:
        assert loser_tags["decision_reason"] == gates[loser["family"]]["reason"]
    train = xcom(run, f"train_{winner}")
    assert train["run_id"] and train["model_uri"]
    print(f"tournament: {evaluation['reason']}")
    _check_model_card(run, registered, evaluation, train, tags)

    # A worse challenger (the sequential family, 1 epoch, vs the champion's 4) with a replay day
    # (replay_days 1): plan holds out the day before the newest (2026-01-05, as the champion's
    # gate) and the evidence pools it with the newest, 2026-01-06 (after the champion's window
    # too). The baselines are relaxed (margin 1) and the floor is off, so the paired interval
    # against the champion alone (tolerance 0) must refuse it, naming why: the promotion is
    # skipped and `champion` does not move; the version is still registered.
    import os

    from jobs.evaluate.replay import describe

    # Only the sequential family this time (the run's families parameter): one candidate,
    # trained, gated, registered and served (infra_validate) through the same contract.
    gate_env = {"GATE__MIN_RECALL": "0", "GATE__BASELINE_MARGIN": "1", "GATE__REPLAY_TOLERANCE": "0"}
    os.environ.update({f"RECSYS__{key}": value for key, value in gate_env.items()})
    try:
        worse = dag_test(
            "recsys_train",
            logical_date=pendulum.datetime(2026, 1, 7, tz="UTC"),
            run_conf={"epochs": 1, "window_days": 3, "replay_days": 1, "families": ["seq"]},
        )
    finally:
        for key in gate_env:
            del os.environ[f"RECSYS__{key}"]
    worse_states = {ti.task_id: str(ti.state) for ti in worse.get_task_instances()}
    assert xcom(worse, "plan")["day"] == "2026-01-05" and xcom(worse, "plan")["replay_days"] == "2026-01-06"
    assert {worse_states[f"{t}_{f}"] for t in ("train", "evaluate") for f in ("mf", "ease")} == {"skipped"}
    assert worse_states["train_seq"] == "success" and xcom(worse, "train_seq")["cached"] is False
    second = xcom(worse, "tournament")
    assert second["champion_version"] == registered["version"] and second["day"] == "2026-01-05"
    assert second["blessed"] is False, second
    assert second["metrics"]["challenger"][f"ndcg_at_{k}"] < second["metrics"]["champion"][f"ndcg_at_{k}"]
    evidence = second["evidence"]
    assert [row["day"] for row in evidence["days"]] == ["2026-01-05", "2026-01-06"], evidence
    assert evidence["skipped"] == {} and evidence["users"] == sum(row["users"] for row in evidence["days"])
    replayed = evidence["days"][1]
    assert set(replayed["metrics"]) == {"challenger", "champion", "popularity", "recent_popularity"}
    assert replayed["users"] > 100
    assert replayed["metrics"]["challenger"][f"ndcg_at_{k}"] < replayed["metrics"]["champion"][f"ndcg_at_{k}"]
    interval = evidence["intervals"]["champion"]
    assert interval["low"] <= interval["mean"] <= interval["high"] < 0 and interval["pairs"] == evidence["users"]
    assert set(evidence["intervals"]) == {"champion", "popularity", "recent_popularity"}
    # the baselines were relaxed: the champion's interval is the only reason
    head = f"{evidence['users']} user-days over 2 day(s)"
    assert second["reason"] == f"not blessed ({head}): {describe('champion', interval, k)}: lower bound below −0.0"
    assert worse_states["infra_validate"] == "success"
    assert worse_states["promote"] == "skipped", worse_states
    after = show(get_config())
    assert after[CHAMPION] == registered["version"]
    challenger = xcom(worse, "register")["version"]
    assert challenger != registered["version"]
    assert after["challenger"] == challenger
    challenger_tags = client(get_config()).get_model_version(get_config().mlflow.model_name, challenger).tags
    assert challenger_tags["decision"] == "not_blessed" and challenger_tags["evidence"] == evidence["summary"]
    assert challenger_tags["family"] == "seq"
    assert (challenger_tags["window_start"], challenger_tags["window_end"]) == ("2026-01-02", "2026-01-04")
    import mlflow

    page = mlflow.artifacts.load_text(challenger_tags["model_card"])
    assert "Evidence: the held-out day and the replay days" in page and "2026-01-06 challenger" in page, page

    # Caching, per family: the same inputs again (snapshot content, code, parameters — epochs 4
    # as the first run) hit each family's cache: nothing registered, nothing promoted;
    # force_retrain trains anyway.
    conf = {"epochs": 4, "window_days": 4, "day": "2026-01-05"}
    versions_before = len(client(get_config()).search_model_versions(f"name='{get_config().mlflow.model_name}'"))
    cached = dag_test("recsys_train", logical_date=pendulum.datetime(2026, 1, 8, tz="UTC"), run_conf=conf)
    cached_states = {ti.task_id: str(ti.state) for ti in cached.get_task_instances()}
    assert str(cached.state) == "success", cached_states
    first_versions = {c["family"]: c["version"] for c in registered["candidates"]}
    for family in ("mf", "ease"):
        hit = xcom(cached, f"train_{family}")
        assert hit["cached"] is True and hit["cached_version"] == first_versions[family], hit
    assert xcom(cached, f"train_{winner}")["cache_key"] == tags["cache_key"]
    skipped = ("evaluate_mf", "evaluate_ease", "tournament", "register", "promote")
    assert {t: cached_states[t] for t in skipped} == dict.fromkeys(skipped, "skipped")
    assert (
        len(client(get_config()).search_model_versions(f"name='{get_config().mlflow.model_name}'")) == versions_before
    )
    assert show(get_config()) == after
    forced = dag_test(
        "recsys_train", logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"), run_conf={**conf, "force_retrain": True}
    )
    forced_train = xcom(forced, "train_mf")
    assert forced_train["cached"] is False and forced_train["cache_key"] == xcom(cached, "train_mf")["cache_key"]
    assert xcom(forced, "register")["version"] not in (registered["version"], challenger)


def _check_model_card(run, registered: dict, evaluation: dict, train: dict, tags: dict) -> None:
    """The version's model card, field by field, against the evidence of the same run."""
    import json

    import mlflow

    assert tags["model_card"] == f"runs:/{train['run_id']}/model_card/model_card.html" == registered["model_card"]
    card = json.loads(mlflow.artifacts.load_text(f"runs:/{train['run_id']}/model_card/model_card.json"))
    snapshot = xcom(run, "snapshot")
    assert card["model"] == {
        "name": get_config().mlflow.model_name,
        "version": registered["version"],
        "run_id": train["run_id"],
        "experiment_id": registered["experiment_id"],
        "registered_at": tags["registered_at"],
        "family": evaluation["winner"],
    }
    data = card["data"]
    assert (data["window_start"], data["window_end"], data["held_out_day"]) == (
        "2026-01-01",
        "2026-01-04",
        "2026-01-05",
    )
    assert data["train_days"] == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"] and data["skipped_days"] == []
    assert (data["train_pairs"], data["test_pairs"], data["users"], data["items"]) == (
        snapshot["train_rows"],
        snapshot["test_rows"],
        snapshot["n_users"],
        snapshot["n_items"],
    )
    assert data["content_hash"] == snapshot["content_hash"] and data["snapshot_uri"] == snapshot["uri"]
    assert set(card["validation"]) == {*data["train_days"], "2026-01-05"}
    assert all(v["success"] and v["rows"] > 3000 for v in card["validation"].values()), card["validation"]
    assert card["evaluation"]["metrics"] == evaluation["metrics"] and card["evaluation"]["blessed"] is True
    # at registration: the winner's gate reason (promotion later tags the tournament's, which quotes it)
    assert card["decision"]["decision"] == "blessed" and card["decision"]["reason"] in evaluation["reason"]
    assert card["decision"]["reason"].startswith("blessed (") and tags["decision_reason"] == evaluation["reason"]
    assert card["decision"]["tournament"].startswith("won: pooled ndcg@")
    assert card["context"]["airflow_run_id"] == run.run_id and card["context"]["airflow_dag_id"] == "recsys_train"
    assert card["lineage"]["git_commit"] == tags["git_commit"] and card["lineage"]["cache_key"] == tags["cache_key"]
    assert card["approval"] is None
    assert card["training"]["params"].get("epochs") == "4" or card["training"]["params"]["model"] == "ease"
    page = mlflow.artifacts.load_text(tags["model_card"])
    assert f"v{registered['version']}</h1>" in page and "oracle" in page and "2026-01-05" in page
    assert f"Family: {evaluation['winner']}" in page
    # What producing it cost, from the ledger: the snapshot, training and gate ran as jobs here;
    # this test ingested and validated its days in process (no job, so no ledger entries).
    cost = card["cost"]
    assert set(cost["stages"]) == {"snapshot", "train", "evaluate"}, cost
    assert sorted(cost["missing"]) == sorted(f"{s}/dt={d}" for s in ("ingest", "validate") for d in card["validation"])
    for stage in cost["stages"].values():
        assert stage["jobs"] == 1 and 0 < stage["cpu_s"] <= stage["wall_s"] * 2 + 0.5 and stage["gpu_s"] == 0, cost
    # Each stage's entry is what that job itself returned as its cost (its task's XCom), not a re-measure.
    winner = evaluation["winner"]
    for stage, task in (("snapshot", "snapshot"), ("train", f"train_{winner}"), ("evaluate", f"evaluate_{winner}")):
        returned = xcom(run, task)["cost"]
        assert {k: cost["stages"][stage][k] for k in ("wall_s", "cpu_s", "gpu_s")} == {
            k: round(float(returned[k]), 3) for k in ("wall_s", "cpu_s", "gpu_s")
        }, (stage, returned, cost["stages"][stage])
    assert cost["totals"]["cpu_s"] == round(sum(s["cpu_s"] for s in cost["stages"].values()), 3)
    assert cost["totals"]["price"] == 0 and cost["totals"]["currency"] == "USD"  # the local profile prices nothing
    assert float(tags["cost.cpu_s"]) == cost["totals"]["cpu_s"] and float(tags["cost.price"]) == 0
    assert (tags["cost.jobs"], tags["cost.missing"]) == ("3", str(len(cost["missing"])))
    # The register task's link opens it.
    from tests.dag_runs import repo_dag

    links = [link.name for link in repo_dag("recsys_train").get_task("register").operator_extra_links]
    assert "Model card" in links
