"""Registers the project's extra links (the api-server renders them) and its deadline reference (the
scheduler deserializes ``recsys_ingest``'s late-data alert with it) with Airflow."""

from typing import ClassVar

from airflow.plugins_manager import AirflowPlugin

from recsys_airflow.deadlines import LiveRunLogicalDate
from recsys_airflow.links import DriftReportLink, MlflowRunLink, ModelCardLink


class RecsysPlugin(AirflowPlugin):
    name = "recsys"
    operator_extra_links: ClassVar[list] = [MlflowRunLink(), DriftReportLink(), ModelCardLink()]
    deadline_references: ClassVar[list] = [LiveRunLogicalDate]
