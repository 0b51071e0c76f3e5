"""
### recsys_train — snapshot → one trainer per model family → one gate each → tournament → register → infra check → approval → promote

Runs weekly (Monday 04:00 UTC), when the monitor detects drift (it triggers this DAG with a
`reason` in the conf), or on demand from the UI/REST with the typed parameters below.

1. **plan** — the held-out day D: `day`, or the latest validated curated day (`replay_days`
   days before it: those newest days join the gate's evidence).
2. **snapshot** — Spark job `jobs.snapshot`: train on the validated days `[D - window_days, D - 1]`,
   hold out day D (time-based split). Published once per (D, window) under
   `training/snapshots/`.
3. **select_families** / **train_<family>** — one trainer per family of the run's `families`
   (trigger form / REST conf; default `training.families` = `mf`, `ease`; `seq` is built too,
   `training.optional_families`, and trains when a run names it), in parallel on the same
   snapshot; a family left out is skipped with its gate: `train_mf` runs `python -m jobs.train …` (matrix
   factorisation; a `KubernetesPodOperator` on a GPU node in the `cluster` profile, restricted
   security context, Secret-borne MLflow credentials, `gpu_training` pool; checkpoints every
   epoch and resumes after a crash), `train_ease` runs `python -m jobs.ease` (closed form, a CPU
   pod). Locally each is a subprocess; the argv is the same. Each logs its model to MLflow as the
   same pyfunc; the *MLflow run* extra link opens the run. **Cached** (`fresh_<family>` skips
   that family's gate; with every family cached the rest is skipped) when a registered version
   was trained on the same snapshot content, code and parameters — the log says which version;
   `force_retrain` trains anyway.
4. **evaluate_<family>** — the same gate for every family, on day D and the replay days:
   Recall@K / NDCG@K for the candidate,
   the champion, popularity, recent popularity and (synthetic worlds) the oracle; **blessed**
   only with at least `gate.min_users` (day, user) pairs, above the recall floor, with the
   paired bootstrap interval of NDCG@K above the best baseline (`gate.baseline_margin`) and
   non-inferior to the champion (`gate.replay_tolerance`). Every number, the evidence table and
   the decision go to MLflow and the task log.
5. **tournament** — among the blessed candidates the best pooled NDCG@K wins (ties: the
   interval's lower bound, then family order); with none blessed the best refused one is the
   challenger and nothing is promoted.
6. **register** — a version per candidate under the one model name (tag `family`; a loser tagged
   with the gate's refusal or "lost the tournament to …"); the winner gets alias `challenger`,
   tagged with data window, metrics, decision, git commit and Airflow run.
7. **infra_validate** — loads the registered model by URI in a fresh process and scores a smoke
   batch (shape, types, no seen items).
8. **approve** — when `require_approval` (param; default `gate.require_approval`: on in the
   `cluster` profile, off locally) a person approves or rejects the blessed version: the request
   (UI: the run's *Required actions*; REST: `…/taskInstances/approve/-1/hitlDetails`) shows the
   gate's numbers and the model card link; the decision, who made it and why become version tags
   (`review.*`); a rejection skips promotion and keeps the champion. Otherwise it passes at once.
9. **promote** — only for a blessed (and approved) challenger: moves `champion` (previous one kept as
   `previous_champion` for one-step rollback, see `recsys_model_rollback`), emits the
   `recsys_champion_model` Asset event.

No parameter bypasses the gate: `force_retrain` only bypasses the cache; a manual promotion goes
through the audited rollback DAG.
"""

from __future__ import annotations

from airflow.sdk import dag

from jobs.core.config import get_config
from recsys_airflow.assets import CHAMPION_MODEL
from recsys_airflow.defaults import dag_args
from recsys_airflow.factory import PipelineSteps, families_of, training_params

cfg = get_config()
BUILT = cfg.training.built_families  # a run trains its `families` of these


@dag(
    dag_id="recsys_train",
    schedule="0 4 * * 1",
    params=training_params(cfg, BUILT),
    **dag_args(cfg, __doc__, ["training", "mlflow", "gpu"]),
)
def recsys_train():
    steps = PipelineSteps(cfg)
    planned = steps.plan()
    snapshot = steps.snapshot(planned)
    candidates = [steps.candidate(family, snapshot, planned) for family in families_of(BUILT)]
    chosen = steps.select(planned, candidates)
    ranked = steps.tournament(candidates)
    registered = steps.register(ranked, snapshot)
    validated = steps.infra_validate(registered, snapshot)
    blessed = steps.blessed(ranked)
    approve = steps.approve()
    promote = steps.promote(registered, ranked, outlets=[CHAMPION_MODEL])

    for c in candidates:  # one trainer and one gate per family, in parallel
        planned >> snapshot >> chosen >> c.train >> c.fresh >> c.evaluate >> ranked
    ranked >> registered >> validated >> blessed >> approve >> promote


recsys_train()
