"""`make demo`'s loop on a small world, on its own stack: real scheduler, every DAG, the timeline.

Runs ``scripts/demo.py`` as a user would (``clean_demo``: a private state folder and private
ports, so it never touches the session's shared stack; ``tests/demo_loop.py``) and checks what the timeline promises: every day
ingested, the served days scored by a pinned champion, the online hit-rate measured, the drift
on the drift day detected by the monitor, a retraining triggered through the scheduler with the
monitor's reason, gated and registered, and the registry left with one champion.

Then, on the same stack, an operator's reprocess backfill of three past days (the last training
day, never served, and two served days; ``tests/demo_loop.reprocess_history``): curated data
byte-identical, the served recommendations byte-identical, the never-served day still without
any, no monitoring run and no training run started by it — the score runs hold every day and
say why. Last, a retraining forced on the champion's snapshot with ``require_approval`` is
rejected over REST (``tests/demo_loop.reject_a_retraining``): the champion stays.
"""

from __future__ import annotations

import json

import pytest

from tests.demo_loop import REJECTION, REPROCESSED, SERVED_DAYS, TRAIN_DAYS

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(3000)
def test_demo_runs_the_whole_loop_and_retrains_on_drift(clean_demo):
    done = clean_demo
    assert done.returncode == 0, done.failure()
    print(done.stdout[-3000:])
    timeline = done.timeline
    rows = {r["day"]: r for r in timeline["rows"]}
    days = sorted(rows)
    assert len(days) == TRAIN_DAYS + SERVED_DAYS
    assert all(rows[d]["rows"] and rows[d]["rows"] > 2500 for d in days), rows
    # The timeline this seeded world produces (the same before and after every refactoring of the
    # jobs; a change here is a change of behaviour and must be explained).
    assert days == [f"2026-03-{d:02d}" for d in range(2, 10)]
    assert [rows[d]["rows"] for d in days] == [3000] * 8
    # Two families per training (issue 26): the scheduled run registers v1 (mf) and v2 (ease), and
    # EASE wins (pooled NDCG@10 0.219 vs 0.169). The drift of 03-08 retrains both; the demo's gate
    # accepts a challenger within 0.05 NDCG@10 of the champion (scripts/demo.py DEMO_GATE_ENV: one
    # day after a drift has ~110 evaluated users), and the retrained MF wins the tournament and
    # serves 03-09. Before (MF alone, old defaults): v1, then v2 promoted on the same drift;
    # hit-rates 0.364, 0.368; champion gate NDCG@10 challenger 0.19, champion 0.161.
    assert [rows[d]["model_version"] for d in days] == [None] * 5 + ["2", "2", "3"]
    assert [rows[d]["retrain"] for d in days] == [None] * 5 + [False, True, False]
    assert [None if rows[d]["hit_rate"] is None else round(rows[d]["hit_rate"], 3) for d in days] == [
        *[None] * 6,
        0.364,
        0.326,
    ]
    drifted = ["user_daily_events", "item_popularity", "unseen_items"]
    assert [rows[d]["alerts"] for d in days[5:]] == [[], drifted, ["item_popularity"]]
    assert [round(rows[d]["max_psi"], 2) for d in days[5:]] == [0.02, 7.55, 7.61]
    events = {d: rows[d]["events"] for d in days if rows[d]["events"]}
    drift = "train (data drift on 3 features (≥ 2): user_daily_events, item_popu)"
    assert events == {
        "2026-03-06": ["train (scheduled) → v1 mf lost_tournament, v2 ease promoted"],
        "2026-03-08": [f"{drift} → v3 mf promoted, v4 ease lost_tournament"],
    }, events
    assert timeline["aliases"] == {"champion": "3", "challenger": "3", "previous_champion": "2"}
    gate = {ranker: round(m["ndcg_at_10"], 3) for ranker, m in timeline["champion_metrics"].items()}
    # The champion's gate on its held-out day 2026-03-08 (v2, EASE, as the champion then).
    assert gate == {
        "challenger": 0.16,
        "champion": 0.166,
        "popularity": 0.125,
        "recent_popularity": 0.126,
        "oracle": 0.258,
    }, gate
    assert "this model" in done.stdout and "oracle" in done.stdout
    # Where the time went, from the metadata DB: every day's ingest task counted, seconds positive.
    spent = {(r["dag_id"], r["task_id"]): r for r in timeline["task_time"]}
    assert spent[("recsys_ingest", "ingest")]["tasks"] == len(days), spent
    assert all(r["seconds"] > 0 for r in spent.values()) and ("recsys_train", "train_mf") in spent, spent
    assert "task time per stage (Airflow metadata DB" in done.stdout
    # What each version cost, summed from the ledger of the jobs that produced it.
    costs = timeline["version_costs"]
    assert set(costs) == {"1", "2", "3", "4"}, costs
    assert all(c["cpu_s"] > 0 and c["wall_s"] >= c["cpu_s"] / 2 and c["gpu_s"] == 0 for c in costs.values()), costs
    # Every stage of each version's chain ran as a job here, ingestion and validation of every day
    # it used included: the ledger has all their entries (the card lists none missing).
    assert all(c["missing"] == 0 and c["jobs"] >= 7 for c in costs.values()), costs
    assert "cost per version" in done.stdout

    # The reprocess backfill that followed (policy: served recommendations are a record;
    # reloaded history is never served and never starts a retraining).
    re = done.after
    assert {d: re["ingest"][d] for d in REPROCESSED} == dict.fromkeys(REPROCESSED, ("backfill", "success")), re
    assert re["curated_same"] == dict.fromkeys(REPROCESSED, True)
    assert re["recommendations_before"]["2026-03-06"] is None  # a training day: never served
    assert re["recommendations_after"] == re["recommendations_before"]
    assert [re["recommendations_after"][d]["model_version"] for d in REPROCESSED[1:]] == ["2", "2"]
    assert re["new_runs"] == {"recsys_monitor": [], "recsys_train": []}, re["new_runs"]
    assert re["score_plans"] and set(re["score_plans"].values()) == {"skipped"}, re["score_plans"]
    # the report a missing score run would raise with: the consumer active, nothing left pending
    assert re["scheduler_side"].startswith(
        "recsys_score {'is_paused': False, 'is_stale': False, 'has_import_errors': False}, pending partitions []"
    ), re["scheduler_side"]
    held = "\n".join(re["held_logs"].values())
    assert "dt=2026-03-06 held, not scored: published by a backfill only" in held, held
    for day in REPROCESSED[1:]:
        assert f"dt={day} held, not scored: served already (by " in held, held

    # Then a retraining forced on the champion's own snapshot day with require_approval, rejected
    # over REST with a reason: promotion skipped, the champion unchanged, the version and its
    # card say who rejected it and why (approval over REST: each promotion of the chaos run).
    rejection = re["rejection"]
    assert "error" not in rejection, rejection
    assert rejection["request"], rejection["states"]  # the approval was requested
    assert rejection["run"] == "success" and rejection["states"]["promote"] == "skipped", rejection["states"]
    assert rejection["states"]["approve"] == "success" and rejection["champion_after"] == rejection["champion_before"]
    assert "Promote recsys-mf version" in rejection["request"]["subject"]
    assert "| champion |" in rejection["request"]["body"] and "model_card.html" in rejection["request"]["body"]
    tags = rejection["rejected"]
    assert tags["review.decision"] == "rejected" and tags["review.by"] == "admin", tags
    assert tags["review.reason"] == REJECTION and tags["decision"] != "promoted"
    assert rejection["card_review"]["decision"] == "rejected" and rejection["card_review"]["reason"] == REJECTION

    # OpenLineage (the stack's file transport): each reprocessed day's ingest task reported two
    # runs (the day's first ingestion and the reprocess), landing folder in, curated partition out.
    stack = done.stack
    lineage = [json.loads(line) for line in stack.lineage_file.read_text().splitlines() if line]
    ingest_runs = [
        e for e in lineage if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "recsys_ingest.ingest"
    ]
    assert {e["job"]["namespace"] for e in ingest_runs} == {"recsys-local"}
    data = stack.state / "data"
    for day in REPROCESSED:
        curated, landing = (
            str(data / "curated" / "events" / f"dt={day}"),
            str(data / "landing" / "events" / f"dt={day}"),
        )
        matching = [
            e
            for e in ingest_runs
            if curated in {o["name"] for o in e["outputs"]} and landing in {i["name"] for i in e["inputs"]}
        ]
        assert len(matching) == 2, (day, [e["outputs"] for e in ingest_runs])
    starts = [e for e in lineage if e.get("eventType") == "START" and e["job"]["name"].startswith("recsys_ingest.")]
    assert len(starts) >= 3 * (len(days) + len(REPROCESSED))  # sensor, ingest, validate, …: every try starts
