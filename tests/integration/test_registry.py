"""Alias promotion, compare-and-set under concurrency and rollback against a real MLflow server."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from jobs.core.config import get_config
from jobs.core.tracking import CHALLENGER, CHAMPION, PREVIOUS, alias_version, client
from jobs.registry.aliases import RegistryError, promote, review, rollback, show
from jobs.registry.register import register
from tests.pyfuncs import FixedRanker

pytestmark = pytest.mark.integration


def _register(items: list[int], tags: dict | None = None) -> dict:
    """Log a FixedRanker run and register it."""
    cfg = get_config()
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.mlflow.experiment)
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=FixedRanker(items), pip_requirements=["mlflow"])
    return register(cfg, run.info.run_id, tags or {}, info.model_uri) | {
        "run_id": run.info.run_id,
        "logged": info.model_uri,
    }


def test_register_is_idempotent_per_run_and_sets_challenger(mlflow_env, data_root):
    cfg = get_config()
    first = _register([1, 2, 3], {"window_start": "2026-01-01", "window_end": "2026-01-06"})
    again = register(cfg, first["run_id"], {"window_start": "2026-01-01", "window_end": "2026-01-06"}, first["logged"])
    assert first["version"] == again["version"] == "1"
    assert again["reused"] is True
    cl = client(cfg)
    assert alias_version(cl, cfg.mlflow.model_name, CHALLENGER) == "1"
    tags = cl.get_model_version(cfg.mlflow.model_name, "1").tags
    assert (tags["window_start"], tags["window_end"]) == ("2026-01-01", "2026-01-06")
    assert len(tags["git_commit"]) in (7, 40) or tags["git_commit"] == "unknown"
    assert alias_version(cl, cfg.mlflow.model_name, CHAMPION) is None


def test_promote_moves_champion_keeps_previous_and_rollback_restores(mlflow_env, data_root):
    cfg = get_config()
    v1 = _register([1])["version"]
    assert promote(cfg, v1, None, "first model", "test")["promoted"] is True
    v2 = _register([2])["version"]
    out = promote(cfg, v2, v1, "better", "test")
    assert out == {"promoted": True, "version": v2, "previous": v1, "decision": "promoted", "reason": "better"}
    assert show(cfg) == {CHAMPION: v2, CHALLENGER: v2, PREVIOUS: v1}
    cl = client(cfg)
    assert cl.get_model_version(cfg.mlflow.model_name, v2).tags["decision"] == "promoted"
    assert cl.get_model_version(cfg.mlflow.model_name, v1).tags["replaced_by"] == v2
    back = rollback(cfg, "bad online metrics", "oncall")
    assert back == {"champion": v1, "previous_champion": v2, "reason": "bad online metrics", "actor": "oncall"}
    assert cl.get_model_version(cfg.mlflow.model_name, v2).tags["decision"] == "rolled_back"
    assert "oncall" in cl.get_model_version(cfg.mlflow.model_name, v1).tags["decision_reason"]
    loaded = mlflow.pyfunc.load_model(f"models:/{cfg.mlflow.model_name}@{CHAMPION}")
    assert loaded.predict(pd.DataFrame({"user_id": [5]}))["item_ids"][0] == [1]


def test_stale_gate_is_refused_and_leaves_one_champion(mlflow_env, data_root):
    cfg = get_config()
    v1 = _register([1])["version"]
    promote(cfg, v1, None, "first", "test")
    v2 = _register([2])["version"]
    v3 = _register([3])["version"]
    promote(cfg, v2, v1, "run A blessed", "run-a")
    with pytest.raises(RegistryError, match=f"champion of .* is version {v2}, not {v1}"):
        promote(cfg, v3, v1, "run B blessed against v1", "run-b")
    assert show(cfg)[CHAMPION] == v2
    assert client(cfg).get_model_version(cfg.mlflow.model_name, v3).tags["decision"] == "stale_gate"


def test_concurrent_promotions_leave_exactly_one_champion(mlflow_env, data_root):
    cfg = get_config()
    base = _register([0])["version"]
    promote(cfg, base, None, "base", "test")
    versions = [_register([i])["version"] for i in (1, 2, 3, 4)]
    outcomes: dict[str, str] = {}

    def attempt(v: str) -> None:
        try:
            promote(cfg, v, base, "blessed against base", f"run-{v}")
            outcomes[v] = "promoted"
        except RegistryError:
            outcomes[v] = "refused"

    threads = [threading.Thread(target=attempt, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(outcomes.values()) == ["promoted", "refused", "refused", "refused"]
    winner = next(v for v, o in outcomes.items() if o == "promoted")
    assert show(cfg)[CHAMPION] == winner
    decisions = [client(cfg).get_model_version(cfg.mlflow.model_name, v).tags.get("decision") for v in versions]
    assert decisions.count("promoted") == 1
    assert decisions.count("stale_gate") == 3


def test_rollback_without_previous_is_a_clear_error(mlflow_env, data_root):
    cfg = get_config()
    v1 = _register([1])["version"]
    promote(cfg, v1, None, "first", "test")
    with pytest.raises(RegistryError, match="no previous_champion"):
        rollback(cfg, "oops", "test")
    assert show(cfg)[CHAMPION] == v1


def test_review_tags_the_version_and_adds_the_decision_to_its_card(mlflow_env, data_root, tmp_path):
    import json

    from jobs.registry.card import CARD_HTML, CARD_JSON

    cfg = get_config()
    first = _register([4, 5])
    version = first["version"]
    cl = client(cfg)
    assert "model_card" in cl.get_model_version(cfg.mlflow.model_name, version).tags
    out = review(cfg, version, "rejected", "operator", "NDCG drop on new users")
    assert out["card_updated"] is True
    tags = cl.get_model_version(cfg.mlflow.model_name, version).tags
    assert (tags["review.decision"], tags["review.by"], tags["review.reason"]) == (
        "rejected",
        "operator",
        "NDCG drop on new users",
    )
    assert alias_version(cl, cfg.mlflow.model_name, CHAMPION) != version  # a review moves no alias
    card = json.loads(Path(cl.download_artifacts(first["run_id"], CARD_JSON, str(tmp_path))).read_text())
    assert card["review"]["decision"] == "rejected" and card["review"]["by"] == "operator"
    page = Path(cl.download_artifacts(first["run_id"], CARD_HTML, str(tmp_path))).read_text()
    assert "Human review" in page and "NDCG drop on new users" in page
    with pytest.raises(RegistryError, match="expected approved or rejected"):
        review(cfg, version, "maybe", "operator", "")
    with pytest.raises(RegistryError, match="has no version"):
        review(cfg, "999", "approved", "operator", "")
