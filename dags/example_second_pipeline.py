"""
### recsys_popularity — a second model pipeline built from the factory (popularity fallback)

The cold-start fallback model, trained, gated, registered and promoted exactly like the main
recommender, under its own MLflow model name **recsys-popularity**. The whole pipeline is one
call to `recsys_airflow.factory.model_pipeline` (see docs/adding-a-pipeline.md):

1. **plan** — the held-out day D (`day`, or the latest validated curated day).
2. **snapshot** — `jobs.snapshot` (Spark): the same time-split snapshot `recsys_train` uses.
3. **select_families** / **train_popularity** — one family, always selected; `python -m jobs.popularity`: ranks items by distinct users in the
   window, logs a pyfunc to MLflow (local subprocess, or a CPU-only pod of the training image in
   the `cluster` profile: a family with `gpu=False` gets a copy of the config without the GPU,
   its node selector and toleration, and the default pool instead of `gpu_training`).
4. **evaluate_popularity** — the same gate, against the champion of `recsys-popularity`; since this model
   *is* the gate's popularity baseline it is only blessed when the baseline rule
   (`gate.baseline_margin` > 0) allows a tie.
5. **tournament** — one family, one candidate: it is the challenger.
6. **register** — a new version with alias `challenger` and the audit tags.
7. **infra_validate** — loads the version by registry URI in a fresh process, scores a smoke batch.
8. **promote** — moves `champion` of `recsys-popularity` (never touches `recsys-mf`) and emits
   the `recsys_popularity_champion` Asset.

Manual only (trigger it from the UI/REST with the typed form below): a fallback is refreshed
when someone decides to, not on a timer.
"""

from __future__ import annotations

from airflow.sdk import Asset, dag

from jobs.core.config import get_config
from recsys_airflow.defaults import dag_args
from recsys_airflow.factory import Family, model_pipeline, training_params

cfg = get_config()
# Counting needs no GPU: gpu=False trains in a CPU pod (a copy of the config, not a new setting).
POPULARITY = Family(
    "popularity",
    "jobs.popularity",
    gpu=False,
    doc_md="Popularity counts over the snapshot window, logged as a pyfunc (no epochs, no GPU needed).",
)
MODEL_NAME = "recsys-popularity"
POPULARITY_CHAMPION = Asset(
    name="recsys_popularity_champion", uri="recsys://models/popularity/champion", group="recsys"
)


@dag(
    dag_id="recsys_popularity",
    schedule=None,
    params=training_params(cfg),
    **dag_args(cfg, __doc__, ["training", "mlflow", "example", "manual"]),
)
def recsys_popularity():
    p = model_pipeline(cfg, families=[POPULARITY], model_name=MODEL_NAME, outlets=[POPULARITY_CHAMPION])
    p.plan >> p.snapshot >> p.select >> p.train["popularity"] >> p.fresh["popularity"] >> p.evaluate["popularity"]
    p.evaluate["popularity"] >> p.tournament >> p.register >> p.infra_validate >> p.blessed >> p.approve >> p.promote


recsys_popularity()
