"""
### recsys_model_rollback — audited one-step rollback of the champion model

Manual only (trigger from the UI or REST with a `reason`). Moves the `champion` alias back to
`previous_champion` and the current champion to `previous_champion`, tagging both versions with
the reason, the requesting run and the time (`jobs.registry rollback`). Runs in the
single-slot `model_registry` pool, so it never interleaves with a promotion.

Scoring needs no signal: every `recsys_score` run resolves `champion` afresh, so the next
validated day is scored by the restored version (recommendations already served stay as they
were). The `recsys_champion_model` Asset event (also emitted by every promotion) is for
consumers of the champion outside this project, e.g. an online service that reloads it.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from jobs.core.config import get_config
from recsys_airflow.assets import CHAMPION_MODEL
from recsys_airflow.defaults import dag_args
from recsys_airflow.launcher import JobOperator

cfg = get_config()


@dag(
    dag_id="recsys_model_rollback",
    schedule=None,
    params={
        "reason": Param(
            type="string",
            minLength=5,
            maxLength=500,
            title="Reason",
            description="Why the champion is rolled back (kept on both model versions).",
        ),
    },
    **dag_args(cfg, __doc__, ["mlflow", "manual"], retries=1),
)
def recsys_model_rollback():
    JobOperator(
        task_id="rollback",
        module="jobs.registry",
        job_args=["rollback", "--reason", "{{ params.reason }}", "--actor", "{{ dag.dag_id }}/{{ run_id }}"],
        pool="model_registry",
        outlets=[CHAMPION_MODEL],
    )


recsys_model_rollback()
