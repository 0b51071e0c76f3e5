"""The model-pipeline factory: a second pipeline (popularity) built from the same pieces.

Shape tests prove the factory gives every pipeline the same graph and contracts as
``recsys_train`` while keeping model names and trainers apart (also in the cluster profile,
where the rendered training pod is validated against the Kubernetes schema). The integration
test runs ``recsys_popularity`` end to end with ``dag.test()`` through the real gate, registry
and promotion — once refused by the default lift rule, once blessed — on a real MLflow server.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pendulum
import pytest

from tests.dag_runs import dag_test, repo_bag, task_states, xcom

REPO = Path(__file__).resolve().parents[2]

EDGES = {  # one family's chain plus every data dependency (an XComArg makes its producer upstream)
    "plan": ["evaluate_popularity", "select_families", "snapshot"],  # the gate gets the replay days
    "snapshot": ["evaluate_popularity", "infra_validate", "register", "select_families", "train_popularity"],
    "select_families": ["train_popularity"],  # the run's families (recsys_train: a trigger-form choice)
    "train_popularity": ["evaluate_popularity", "fresh_popularity", "tournament"],
    "fresh_popularity": ["evaluate_popularity"],
    "evaluate_popularity": ["tournament"],
    "tournament": ["blessed", "promote", "register"],
    "register": ["infra_validate", "promote"],
    "infra_validate": ["blessed"],
    "blessed": ["approve"],
    "approve": ["promote"],
    "promote": [],
}


@pytest.fixture(scope="module")
def dagbag():
    return repo_bag()


def _edges(dag) -> dict[str, list[str]]:
    return {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}


@pytest.mark.unit
def _one_family(edges: dict[str, list[str]], family: str) -> dict[str, list[str]]:
    """The graph restricted to one family's tasks, renamed as ``popularity``'s."""
    others = {t for t in edges if t.rsplit("_", 1)[0] in ("train", "fresh", "evaluate") and not t.endswith(family)}
    return {
        t.replace(family, "popularity"): sorted(d.replace(family, "popularity") for d in ds if d not in others)
        for t, ds in edges.items()
        if t not in others
    }


@pytest.mark.unit
def test_both_pipelines_have_the_factory_graph_and_the_same_trigger_form(dagbag):
    train, popularity = dagbag.dags["recsys_train"], dagbag.dags["recsys_popularity"]
    assert _edges(popularity) == EDGES
    for family in ("mf", "ease", "seq"):  # each family of recsys_train has the same chain into the tournament
        assert _one_family(_edges(train), family) == EDGES
    # the same form, but recsys_train builds three families and lets a run choose among them
    families = train.params.get_param("families")
    assert families.value == ["mf", "ease"] and families.schema["items"]["enum"] == ["mf", "ease", "seq"]
    assert (
        set(train.params) - {"families"}
        == set(popularity.params)
        == {
            "force_retrain",
            "epochs",
            "window_days",
            "day",
            "replay_days",
            "reason",
            "require_approval",
            "report_html",
        }
    )
    assert [o.name for o in train.get_task("promote").outlets] == ["recsys_champion_model"]
    assert [o.name for o in popularity.get_task("promote").outlets] == ["recsys_popularity_champion"]
    for dag, family in ((train, "mf"), (train, "ease"), (popularity, "popularity")):
        assert dag.get_task("register").pool == dag.get_task("promote").pool == "model_registry"
        assert [link.name for link in dag.get_task(f"train_{family}").operator_extra_links] == ["MLflow run"]


@pytest.mark.unit
def test_model_name_and_trainer_reach_the_jobs(dagbag):
    train, popularity = dagbag.dags["recsys_train"], dagbag.dags["recsys_popularity"]
    # recsys_train keeps the configured model name (no flag): jobs.train with --epochs, jobs.ease.
    assert train.get_task("train_mf").module == "jobs.train"
    assert "--epochs" in train.get_task("train_mf").job_args
    assert (
        train.get_task("train_ease").module == "jobs.ease" and "--epochs" not in train.get_task("train_ease").job_args
    )
    assert train.get_task("train_ease").pool == "default_pool"  # no GPU needed: not the gpu_training pool
    for task_id in ("evaluate_mf", "evaluate_ease", "register", "promote"):
        assert "--model-name" not in train.get_task(task_id).job_args
    # The second pipeline: its own trainer and model name on every registry-touching job.
    assert popularity.get_task("train_popularity").module == "jobs.popularity"
    assert "--epochs" not in popularity.get_task("train_popularity").job_args
    for task_id in ("evaluate_popularity", "register", "promote"):
        args = popularity.get_task(task_id).job_args
        assert args[args.index("--model-name") + 1] == "recsys-popularity", task_id
    assert popularity.get_task("train_popularity").pool == "default_pool"


@pytest.mark.unit
def test_cluster_profile_pod_runs_the_pipelines_trainer(monkeypatch):
    """Each family's training pod runs its own module; the EASE and popularity pods ask for no GPU."""
    import kubernetes_validate
    from kubernetes.client import ApiClient

    monkeypatch.setenv("RECSYS_PROFILE", "cluster")
    bag = repo_bag()
    pods = {}
    snapshot = "s3://recsys-data/prod/training/snapshots/dt=2026-01-08_w=7"

    class SnapshotXCom:  # what the snapshot task pushed: its result's keys (multiple_outputs)
        def xcom_pull(self, task_ids=None, key=None, **kwargs):
            return {"uri": snapshot}[key]

    for dag_id, task_id in (
        ("recsys_train", "train_mf"),
        ("recsys_train", "train_ease"),
        ("recsys_popularity", "train_popularity"),
    ):
        op = bag.dags[dag_id].get_task(task_id)
        op.arguments = op.render_template(
            op.arguments, {"ti": SnapshotXCom(), "run_id": "r1", "dag": op.dag, "params": op.dag.params}
        )
        manifest = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
        manifest.update(apiVersion="v1", kind="Pod")
        kubernetes_validate.validate(manifest, "1.33", strict=True)
        pods[task_id] = next(c for c in manifest["spec"]["containers"] if c["name"] == "base")
        pods[task_id]["node_selector"] = manifest["spec"].get("nodeSelector") or {}
    assert pods["train_mf"]["args"][:5] == ["python", "-m", "jobs.train", "--snapshot", snapshot]
    assert pods["train_mf"]["resources"]["limits"]["nvidia.com/gpu"] == "1" and pods["train_mf"]["node_selector"]
    assert pods["train_ease"]["args"][:5] == ["python", "-m", "jobs.ease", "--snapshot", snapshot]
    assert "nvidia.com/gpu" not in pods["train_ease"]["resources"]["limits"] and not pods["train_ease"]["node_selector"]
    pods["recsys_popularity"] = pods["train_popularity"]
    assert not pods["recsys_popularity"].get("command")  # the image's tini entrypoint stays PID 1
    assert pods["recsys_popularity"]["args"][:3] == ["python", "-m", "jobs.popularity"]
    assert pods["recsys_popularity"]["args"][-2:] == ["--result-file", "/airflow/xcom/return.json"]
    assert "nvidia.com/gpu" not in pods["recsys_popularity"]["resources"]["limits"]


@pytest.mark.unit
def test_torchrun_command_names_the_pipeline_trainer(cfg):
    from recsys_airflow.training import pod_command

    multi = cfg.model_copy(update={"training": cfg.training.model_copy(update={"gpus": 4})})
    assert pod_command(multi, ["--epochs", "3"], "jobs.other") == [
        "torchrun",
        "--standalone",
        "--nproc-per-node=4",
        "-m",
        "jobs.other",
        "--epochs",
        "3",
    ]
    assert pod_command(cfg, ["--epochs", "3"])[:3] == ["python", "-m", "jobs.train"]


@pytest.mark.integration
def test_second_pipeline_is_gated_registered_and_promoted_under_its_own_name(
    airflow_db, mlflow_env, cfg, spark, monkeypatch, tmp_path
):
    from jobs import sim as gen
    from jobs.core.config import get_config
    from jobs.core.tracking import CHALLENGER, CHAMPION, client
    from jobs.ingest.job import ingest_day
    from jobs.registry.aliases import show
    from jobs.validate.job import validate_day

    start, days = date(2026, 1, 1), 3
    world = gen.WorldParams(users=200, items=80, factors=4, seed=23, events_per_day=2500)
    gen.generate(world, start, days, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    for i in range(days):
        ingest_day(cfg, spark, start + timedelta(days=i))
        assert validate_day(cfg, start + timedelta(days=i))["success"]
    eval_day = (start + timedelta(days=days - 1)).isoformat()

    # 1. Default gate: the popularity model ties the gate's popularity baseline exactly, so the
    #    paired interval shows no lift (gate.baseline_margin 0): registered as challenger,
    #    promotion skipped.
    first = dag_test(
        "recsys_popularity",
        logical_date=pendulum.datetime(2026, 1, 4, tz="UTC"),
        run_conf={"window_days": 2, "day": eval_day},
    )
    states = task_states(first)
    assert str(first.state) == "success", states
    assert states["promote"] == "skipped" and states["infra_validate"] == "success", states
    evaluation = xcom(first, "evaluate_popularity")
    k = evaluation["k"]
    challenger, baseline = evaluation["metrics"]["challenger"], evaluation["metrics"]["popularity"]
    assert challenger[f"ndcg_at_{k}"] == baseline[f"ndcg_at_{k}"]
    assert challenger[f"recall_at_{k}"] == baseline[f"recall_at_{k}"]
    assert challenger["users"] == baseline["users"] > 0
    assert evaluation["blessed"] is False and "popularity" in evaluation["reason"]
    registered = xcom(first, "register")
    assert registered["name"] == "recsys-popularity"
    assert show(get_config(), "recsys-popularity") == {
        CHAMPION: None,
        CHALLENGER: registered["version"],
        "previous_champion": None,
    }
    tags = client(get_config()).get_model_version("recsys-popularity", registered["version"]).tags
    assert tags["decision"] == "not_blessed"
    assert tags["airflow_dag_id"] == "recsys_popularity"
    assert (tags["window_start"], tags["window_end"]) == ("2026-01-01", "2026-01-02")
    assert xcom(first, "train_popularity")["metrics"][f"ndcg_at_{k}"] > 0

    # 2. A gate that accepts a tie (gate.baseline_margin, set for the job processes only):
    #    blessed and promoted; the main model's registry stays untouched.
    #    Same snapshot and parameters as the first run: a cache hit unless forced.
    monkeypatch.setenv("RECSYS__GATE__BASELINE_MARGIN", "0.1")
    monkeypatch.setenv("RECSYS__GATE__MIN_RECALL", "0.0")
    second = dag_test(
        "recsys_popularity",
        logical_date=pendulum.datetime(2026, 1, 5, tz="UTC"),
        run_conf={"window_days": 2, "day": eval_day, "force_retrain": True},
    )
    states = task_states(second)
    assert str(second.state) == "success", states
    assert states["promote"] == "success", states
    evaluation = xcom(second, "evaluate_popularity")
    assert evaluation["blessed"] is True, evaluation["reason"]
    assert evaluation["champion_version"] is None
    version = xcom(second, "register")["version"]
    assert version != registered["version"]
    assert xcom(second, "promote")["decision"] == "promoted"
    aliases = show(get_config(), "recsys-popularity")
    assert aliases[CHAMPION] == aliases[CHALLENGER] == version
    assert client(get_config()).get_model_version("recsys-popularity", version).tags["decision"] == "promoted"
    assert show(get_config()) == {CHAMPION: None, CHALLENGER: None, "previous_champion": None}

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == second.run_id)).all()
        assert [e.asset.name for e in events] == ["recsys_popularity_champion"]

    # 3. The popularity trainer's registry cache: the same snapshot content, code and parameters
    #    again (the job as the DAG's train task runs it, without --force-retrain) finds the
    #    promoted version by its cache key under its own model name: nothing trained.
    import json
    import subprocess
    import sys

    from recsys_airflow.launcher import job_env

    trained = xcom(second, "train_popularity")
    out = tmp_path / "again.json"
    argv = [sys.executable, "-m", "jobs.popularity", "--snapshot", xcom(second, "snapshot")["uri"]]
    argv += ["--model-name", "recsys-popularity", "--checkpoint-dir", str(tmp_path / "ckpt"), "--result-file", str(out)]
    proc = subprocess.run(argv, cwd=REPO, env=job_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text())
    assert again["cached"] is True and again["cached_version"] == version, again
    assert again["cache_key"] == trained["cache_key"]
    assert f"cached: version {version} has this cache key; nothing trained" in proc.stdout


@pytest.mark.unit
def test_popularity_trainer_ranks_unseen_items_ties_to_the_lower_index_and_serves_unknown_users():
    import numpy as np

    from jobs.popularity.model import PopularityRecommender

    rec = PopularityRecommender(
        {
            "item_ids": np.array([10, 11, 12, 13]),
            "popularity": np.array([5, 7, 7, 1]),
            "user_ids": np.array([100, 101]),
            "seen_indptr": np.array([0, 1, 1]),  # user 100 saw item index 1 (id 11)
            "seen_indices": np.array([1]),
            "default_k": np.array(3),
        }
    )
    rows = rec.recommend(np.array([100, 101, 999]), np.array([3, 2, 4]))
    assert [r["item_ids"] for r in rows] == [[12, 10, 13], [11, 12], [11, 12, 10, 13]]
    assert rows[0]["scores"] == [7.0, 5.0, 1.0]
    with pytest.raises(ValueError, match="k must be at least 1"):
        rec.recommend(np.array([100]), np.array([0]))


@pytest.mark.unit
def test_popularity_trainer_rejects_a_missing_snapshot_with_exit_3(tmp_path):
    import json
    import os
    import subprocess
    import sys

    # Not `from tests.conftest import run_module`: importing conftest a second time re-runs its
    # module code (a new state folder and AIRFLOW_HOME for the rest of the session).
    repo = Path(__file__).resolve().parents[2]
    result = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.popularity",
            "--snapshot",
            str(tmp_path / "nope"),
            "--result-file",
            str(result),
        ],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(repo / "plugins")])},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr[-2000:]  # bad input data (SnapshotError), as in every trainer
    assert "snapshot folder not found" in proc.stderr
    assert json.loads(result.read_text())["message"].startswith("popularity training failed: snapshot folder not found")
