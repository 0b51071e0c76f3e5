"""Registers the project's extra links with Airflow (the api-server needs them to render links)."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from recsys_airflow.links import DriftReportLink, MlflowRunLink


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    operator_extra_links: ClassVar[list] = [MlflowRunLink(), DriftReportLink()]
