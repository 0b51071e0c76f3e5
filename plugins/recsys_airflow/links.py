"""Extra links shown on task instances in the Airflow UI."""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from recsys_airflow.launcher import JobOperator


class MlflowRunLink(BaseOperatorLink):
    """Link from a training/evaluation task to its MLflow run (run id from the task's XCom)."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from jobs.core.config import get_config

        result = XCom.get_value(ti_key=ti_key, key="return_value") or {}
        run_id = result.get("run_id") if isinstance(result, dict) else None
        experiment_id = result.get("experiment_id") if isinstance(result, dict) else None
        if not run_id:
            return ""
        base = get_config().mlflow.public_url
        return f"{base}/#/experiments/{experiment_id or 0}/runs/{run_id}"


class DriftReportLink(BaseOperatorLink):
    """Link from the monitor task to its HTML drift report.

    The report is an artifact of the day's monitoring run in MLflow (``drift/report.html``,
    rendered by MLflow's artifact viewer, reachable from any browser that reaches the MLflow
    UI); when the task logged no run, the link falls back to the report file in the reports
    zone (``file://``, useful on the machine that holds the zone).
    """

    name = "Drift report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from jobs.core.config import get_config

        result = XCom.get_value(ti_key=ti_key, key="return_value") or {}
        if not isinstance(result, dict):
            return ""
        run_id, experiment_id = result.get("run_id"), result.get("experiment_id")
        if run_id and experiment_id:
            base = get_config().mlflow.public_url
            return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/drift/report.html"
        html = result.get("report_html") or ""
        if html and "://" not in html:
            return f"file://{html}"
        return html


class ModelCardLink(BaseOperatorLink):
    """Link from the register task to the version's model card (HTML artifact in MLflow)."""

    name = "Model card"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from jobs.core.config import get_config

        result = XCom.get_value(ti_key=ti_key, key="return_value") or {}
        if not isinstance(result, dict) or not result.get("run_id"):
            return ""
        base = get_config().mlflow.public_url
        return (
            f"{base}/#/experiments/{result.get('experiment_id') or 0}/runs/{result['run_id']}"
            "/artifactPath/model_card/model_card.html"
        )


class RegistryJobOperator(JobOperator):
    """``JobOperator`` for ``jobs.registry register``, with the *Model card* link."""

    operator_extra_links = (ModelCardLink(),)


class MonitorJobOperator(JobOperator):
    """``JobOperator`` for ``jobs.monitor``, with the *Drift report* link."""

    operator_extra_links = (DriftReportLink(),)
