"""
### recsys_test_secret_log — test-only DAG that prints secrets, so the suite can prove they are masked

Loaded only by test sessions: `tests/e2e/test_security.py` adds this folder to the stack's DAG
bundles through `stack.extra_dag_folders`; `make up` never sees it.

1. **print_secrets** — reads a Variable whose key looks secret and a Connection (password and a
   token in its extra) through the Task SDK and prints them, plainly and inside a dict.
2. **echo_template** — a Bash command rendered from `{{ var.value.<key> }}`: the rendered command
   and the subprocess output both reach the task log.

Airflow's secrets masker must replace every one of those values with `***` in the task log and
in the rendered template fields.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import Param, dag, task


@dag(
    dag_id="recsys_test_secret_log",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["recsys", "test", "manual"],
    default_args={"owner": "recsys", "retries": 0},
    params={
        "variable": Param("recsys_test_api_key", type="string", minLength=1, description="Variable to print."),
        "conn_id": Param("recsys_test_service", type="string", minLength=1, description="Connection to print."),
    },
)
def recsys_test_secret_log():
    @task
    def print_secrets(params: dict | None = None) -> None:
        """Print the secret values the way careless task code would."""
        from airflow.sdk import BaseHook, Variable

        value = Variable.get(params["variable"])
        conn = BaseHook.get_connection(params["conn_id"])
        print(f"variable {params['variable']} = {value}")
        print(f"connection password = {conn.password}")
        print(f"connection token = {conn.extra_dejson.get('token')}")
        print({"login": conn.login, "password": conn.password})

    echo = BashOperator(
        task_id="echo_template",
        bash_command='echo "api key from template: {{ var.value[params.variable] }}"',
    )

    print_secrets() >> echo


recsys_test_secret_log()
