"""How the cluster rehearsal accounts for every object in the bucket (``scripts/rehearsal.py``)."""

from __future__ import annotations

import pytest

from scripts.rehearsal import _category, config_env

pytestmark = pytest.mark.unit

MANIFESTS = {
    "curated/events/dt=2026-03-02": {"files": [".attempt-1-a/part-00000.parquet"]},
    "reports/drift/dt=2026-03-07": {"files": ["report.html", "report.json"]},
}


@pytest.mark.parametrize(
    ("key", "category"),
    [
        ("curated/events/dt=2026-03-02/_SUCCESS", "manifest"),
        ("curated/events/dt=2026-03-02/_VALIDATION", "manifest"),
        ("curated/events/dt=2026-03-02/.attempt-1-a/part-00000.parquet", "committed file"),
        # a killed writer's attempt, and one that never committed a manifest at all
        ("curated/events/dt=2026-03-02/.attempt-2-b/part-00000.parquet", "uncommitted"),
        ("curated/events/dt=2026-03-03/.attempt-3-c/part-00000.parquet", "uncommitted"),
        ("reports/drift/dt=2026-03-07/report.html", "committed file"),
        ("reports/drift/dt=2026-03-07/stray.txt", "unknown"),
        # a validation report is committed by the verdict that names it, in the curated day
        ("reports/validation/dt=2026-03-02/report.html", "validation report"),
        ("reports/validation/dt=2026-03-02/report.json", "validation report"),
        ("reports/validation/dt=2026-03-03/report.html", "unknown"),
        ("ledger/ingest/2026-03-02.json", "ledger"),
        ("checkpoints/train-2026-03-06-abc/checkpoint.pt", "checkpoints"),
        ("ground_truth/dt=2026-03-02/truth.npz", "ground truth (simulator)"),
        ("somewhere/else.bin", "unknown"),
        ("curated/events/dt=2026-03-04/part-00000.parquet", "unknown"),
    ],
)
def test_every_object_gets_one_category(key, category):
    assert _category(key, MANIFESTS, frozenset({"reports/validation/dt=2026-03-02"})) == category


def test_the_cluster_profile_keeps_its_settings_but_the_launcher_training_size_and_replay():
    env = config_env()
    assert env["RECSYS_PROFILE"] == "cluster" and env["RECSYS__TRAINING__LAUNCHER"] == "local"
    assert {k for k in env if k.startswith("RECSYS__")} == {
        "RECSYS__TRAINING__LAUNCHER",
        "RECSYS__TRAINING__EPOCHS",
        "RECSYS__TRAINING__BATCH_SIZE",
        "RECSYS__GATE__REPLAY_DAYS",
    }
    assert env["RECSYS__GATE__REPLAY_DAYS"] == "0"  # the local demo's models: comparable end states
