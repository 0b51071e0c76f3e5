"""Optional human approval before promotion: ``recsys_train``'s ``approve`` task.

Between the gates (evaluation, registration, infra validation, ``blessed``) and ``promote``, an
Airflow human-in-the-loop ``ApprovalOperator`` (standard provider, Airflow ≥ 3.1; on 3.3 the
task waits in the ``awaiting_input`` state, no worker slot held) shows the gate's numbers and
the model card link, and waits for *Approve* or *Reject* with a reason — from the UI (the run's
*Required actions*) or from REST (``PATCH …/taskInstances/approve/-1/hitlDetails``).

* Approve: ``promote`` runs; the version is tagged ``review.decision=approved``, ``review.by``,
  ``review.reason``, ``review.at``.
* Reject: ``promote`` is skipped, the champion stays; the version is tagged
  ``review.decision=rejected`` with who rejected it and why.

On by default in the ``cluster`` profile (``gate.require_approval``), off locally; the DAG param
``require_approval`` overrides it per run. When approval is not required the task returns at
once (nothing waits, nothing is tagged). A waiting request is announced like a failure
(``RECSYS APPROVAL: …`` in the task log, and on the ``recsys_webhook`` connection when there is
one) with the link to the run's *Required actions* page. The tags are written by ``python -m jobs.registry
review``, a job like every other (the plugin imports no MLflow).
"""

from __future__ import annotations

import subprocess
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseNotifier, Param
from airflow.sdk.exceptions import AirflowException

from recsys_airflow.launcher import REPO_ROOT, build_argv, job_env

SUBJECT = "Promote MODEL_NAME version {{ ti.xcom_pull(task_ids='register', key='version') }}?"
BODY = """\
{% set ev = ti.xcom_pull(task_ids='tournament') %}{% set reg = ti.xcom_pull(task_ids='register') %}\
**Family {{ ev.winner }}; gate ({{ ev.day }}, held-out day):** {{ ev.reason }}

| ranker | recall@{{ ev.k }} | NDCG@{{ ev.k }} |
|---|---:|---:|
{% for name, m in ev.metrics.items() %}| {{ name }} | {{ '%.4f' | format(m['recall_at_' ~ ev.k]) }} \
| {{ '%.4f' | format(m['ndcg_at_' ~ ev.k]) }} |
{% endfor %}
{% if ev.evidence %}**Evidence:** {{ ev.evidence.summary }}

{% endif %}Champion when gated: {{ ev.champion_version or 'none' }}. Why this training ran: \
{{ dag_run.conf.get('reason') or 'scheduled' }}.

Model card: MLFLOW_URL/#/experiments/{{ reg.experiment_id }}/runs/{{ reg.run_id }}/artifactPath/model_card/model_card.html

Approve to promote; Reject (with a reason) keeps the champion and tags the version.
"""


class ApprovalRequested(BaseNotifier):
    """Announce a waiting approval (``RECSYS APPROVAL: …`` log line, and the ``recsys_webhook``
    connection when configured) with the link to the run's *Required actions* page."""

    def notify(self, context: Any) -> None:
        from recsys_airflow.notify import announce

        task, ti = context["task"], context.get("task_instance") or context.get("ti")
        try:
            link = task.generate_link_to_ui_from_context(context=context)
        except (ValueError, KeyError, AttributeError):  # no api.base_url: the message goes without it
            link = ""
        announce(
            "approval",
            f"approval requested: {task.subject}" + (f" — answer at {link}" if link else ""),
            {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "url": link or None},
        )


class PromotionApproval(ApprovalOperator):
    """The ``approve`` task (see the module docstring)."""

    def __init__(self, *, model_name: str, mlflow_url: str, **kwargs: Any) -> None:
        # The DAG's params (handed in by default_args) stay the run's: the task reads them from its
        # context; its own params are the form a person fills in.
        kwargs.pop("params", None)
        super().__init__(
            subject=SUBJECT.replace("MODEL_NAME", model_name),
            body=BODY.replace("MLFLOW_URL", mlflow_url.rstrip("/")),
            params={
                "reason": Param(
                    "",
                    type="string",
                    maxLength=500,
                    title="Reason",
                    description="Why you approve or reject (recorded on the model version).",
                )
            },
            notifiers=[ApprovalRequested()],
            **kwargs,
        )
        self.model_name = model_name

    def execute(self, context: Any) -> Any:
        if not _required(context):
            self.log.info("approval not required (require_approval is false): promotion goes ahead")
            return {"chosen_options": [self.APPROVE], "params_input": {}, "responded_by_user": None, "required": False}
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            chosen = event["chosen_options"]
            self.validate_chosen_options(chosen)
            user = event.get("responded_by_user") or {}
            who = user.get("name") or user.get("id") or "unknown"
            reason = str((event.get("params_input") or {}).get("reason") or "")
            version = context["ti"].xcom_pull(task_ids="register", key="version")
            decision = "approved" if chosen == [self.APPROVE] else "rejected"
            self.log.info("%s by %s: %s", decision, who, reason or "(no reason given)")
            self._record(str(version), decision, who, reason)
        return super().execute_complete(context, event)

    def _record(self, version: str, decision: str, who: str, reason: str) -> None:
        argv = build_argv(
            "jobs.registry",
            # "--x=value": a reason that starts with "-" is still a value, not an option
            ["review", f"--model-version={version}", f"--decision={decision}", f"--by={who}", f"--reason={reason}"],
        )
        argv += ["--model-name", self.model_name]
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=job_env(), capture_output=True, text=True, timeout=300)
        for line in (proc.stdout + proc.stderr).splitlines():
            self.log.info("%s", line)
        if proc.returncode != 0:
            raise AirflowException(f"jobs.registry review exited with code {proc.returncode}")


def _required(context: Any) -> bool:
    """The run's ``require_approval`` param (its default is ``gate.require_approval``)."""
    params = context.get("params") or {}
    if "require_approval" in params:
        return bool(params["require_approval"])
    from jobs.core.config import get_config

    return get_config().gate.require_approval
