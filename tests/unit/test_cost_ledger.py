"""The model card's cost: the ledger entries of the chain that produced a model, priced.

Entries are what ``jobs.core.cli.run_job`` writes (``ledger/<stage>/<key>.json`` with the job's
``cost``); the card sums them per stage and prices CPU- and GPU-hours with ``ledger.*``.
"""

from __future__ import annotations

import json

import pytest

from jobs.core.config import load_config
from jobs.registry.card import cost_ledger

pytestmark = pytest.mark.unit

SNAPSHOT = "file:///lake/snapshots/day=2026-03-06_w=5"


def _entry(root, key: str, cpu_s: float, gpu_s: float = 0.0, wall_s: float = 10.0, rss: float = 100.0) -> None:
    path = root / "ledger" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    cost = {"wall_s": wall_s, "cpu_s": cpu_s, "gpu_s": gpu_s, "peak_rss_mib": rss}
    path.write_text(json.dumps({"key": key, "cost": cost}))


def test_a_priced_chain_costs_its_cpu_and_gpu_hours_and_names_what_is_missing(tmp_path):
    cfg = load_config(
        environ={
            "RECSYS__STORAGE__ROOT": str(tmp_path),
            "RECSYS__LEDGER__CPU_HOUR_PRICE": "0.05",
            "RECSYS__LEDGER__GPU_HOUR_PRICE": "2.5",
            "RECSYS__LEDGER__CURRENCY": "EUR",
        }
    )
    days = ["2026-03-04", "2026-03-05"]
    for day in days:
        _entry(tmp_path, f"ingest/dt={day}", cpu_s=360.0)
    _entry(tmp_path, "validate/dt=2026-03-04", cpu_s=36.0)  # 03-05's validation left no entry
    _entry(tmp_path, "snapshot/day=2026-03-06_w=5", cpu_s=720.0, rss=900.0)
    _entry(tmp_path, "train/run1", cpu_s=1800.0, gpu_s=1440.0)
    _entry(tmp_path, "evaluate/run1", cpu_s=144.0)
    _entry(tmp_path, "train/run2", cpu_s=99999.0)  # another run's: never counted

    cost = cost_ledger(cfg, days, SNAPSHOT, "run1")

    assert cost["missing"] == ["validate/dt=2026-03-05"]
    assert {s: (r["jobs"], r["cpu_s"], r["gpu_s"]) for s, r in cost["stages"].items()} == {
        "ingest": (2, 720.0, 0.0),
        "validate": (1, 36.0, 0.0),
        "snapshot": (1, 720.0, 0.0),
        "train": (1, 1800.0, 1440.0),
        "evaluate": (1, 144.0, 0.0),
    }
    totals = cost["totals"]
    assert totals["cpu_s"] == 3420.0 and totals["gpu_s"] == 1440.0 and totals["jobs"] == 6
    assert totals["peak_rss_mib"] == 900.0 and totals["currency"] == "EUR"
    # 3420 CPU-seconds = 0.95 CPU-hours at 0.05, 1440 GPU-seconds = 0.4 GPU-hours at 2.5
    assert totals["price"] == pytest.approx(0.95 * 0.05 + 0.4 * 2.5)


def test_the_snapshot_cost_is_the_build_of_the_model_s_own_pipeline_run(tmp_path):
    """Every training run of the same day and window rebuilds the same snapshot directory; the
    ledger keeps one entry per run (``run_scoped``), and a card reads its own run's."""
    from jobs.core.cli import run_scoped

    cfg = load_config(environ={"RECSYS__STORAGE__ROOT": str(tmp_path)})
    mine, later = "recsys_train/scheduled__2026-03-09T04:00:00+00:00", "recsys_train/manual__2026-03-09T10:11:12"
    assert run_scoped("snapshot/day=2026-03-06_w=5", mine) == (
        "snapshot/day=2026-03-06_w=5/recsys_train_scheduled__2026-03-09T04_00_00+00_00"
    )
    assert run_scoped("snapshot/day=2026-03-06_w=5", None) == "snapshot/day=2026-03-06_w=5"  # a job run by hand
    _entry(tmp_path, run_scoped("snapshot/day=2026-03-06_w=5", mine), cpu_s=720.0)
    _entry(tmp_path, run_scoped("snapshot/day=2026-03-06_w=5", later), cpu_s=5.0)  # a later rebuild
    _entry(tmp_path, "train/run1", cpu_s=100.0)
    _entry(tmp_path, "evaluate/run1", cpu_s=10.0)

    cost = cost_ledger(cfg, [], SNAPSHOT, "run1", pipeline=mine)
    assert cost["stages"]["snapshot"]["cpu_s"] == 720.0 and cost["missing"] == []
    assert cost_ledger(cfg, [], SNAPSHOT, "run1")["missing"] == ["snapshot/day=2026-03-06_w=5"]  # no run: no guess
