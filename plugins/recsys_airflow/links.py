"""Extra links shown on task instances in the Airflow UI."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom


class MlflowRunLink(BaseOperatorLink):
    """Link from a training/evaluation task to its MLflow run (run id from the task's XCom)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from jobs.config import get_config

        result = XCom.get_value(ti_key=ti_key, key="return_value") or {}
        run_id = result.get("run_id") if isinstance(result, dict) else None
        experiment_id = result.get("experiment_id") if isinstance(result, dict) else None
        if not run_id:
            return ""
        base = get_config().mlflow.public_url
        return f"{base}/#/experiments/{experiment_id or 0}/runs/{run_id}"
