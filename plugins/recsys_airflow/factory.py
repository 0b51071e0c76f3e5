"""Authoring pieces: one call adds a whole gated model pipeline to the DAG being defined.

``model_pipeline(cfg, model_name=..., train_module=...)`` wires

    plan → snapshot → train → fresh → evaluate → register → infra_validate → blessed → approve → promote

with the contracts of ``recsys_train`` (the first pipeline built from it):

* **plan** picks the evaluation day D (``params.day`` or the latest validated curated day
  not after the run's data interval — ``params.replay_days`` days before it when the replay gate
  is on), the replay days after D and the window (``params.window_days``);
* **snapshot** (``jobs.snapshot``, Spark) publishes the time-split train/test snapshot of D once;
* **train** runs ``python -m <train_module> --snapshot S <train_args> --run-name R
  --checkpoint-dir C`` through ``recsys_airflow.training.train_task``, so the profile still picks
  a local subprocess or a GPU ``KubernetesPodOperator`` (same task id, argv and XCom). Any module
  that honours the trainer's CLI contract fits: it logs an MLflow pyfunc (input ``user_id``/``k``,
  output ``user_id``/``item_ids``/``scores``) and reports ``{"run_id", "model_uri", ...}``;
* **fresh** short-circuits when the trainer reported ``cached`` (``jobs.core.cache``: a
  registered version was trained on the same snapshot content, code and parameters; the log
  says which); ``force_retrain`` makes the trainer train anyway;
* **evaluate** (``jobs.evaluate gate``) is the gate against the champion *of this model name*,
  popularity and recent popularity, pooled over the held-out day and the replay days; **register** (``jobs.registry register``) adds a
  version with alias ``challenger`` and its lineage (window, snapshot, gate decision, code
  version, read from the snapshot manifest and the training run); **infra_validate**
  (``jobs.evaluate infra``) loads it by registry URI in a fresh process; **blessed**
  short-circuits unless the gate blessed it; **approve** (``recsys_airflow.approval``) waits for a
  person's Approve/Reject when ``require_approval`` (param; default ``gate.require_approval``) and
  tags the version with the decision, else passes at once; **promote** moves ``champion`` (compare-and-set on
  the champion the gate saw) and emits ``outlets``.

Tasks pass values to each other as XComArgs (``snapshot.output["uri"]``: every job task pushes
its result's keys as XComs), never as Jinja strings of ``xcom_pull``. The task ids are plain
(no TaskGroup prefix) so that the UI and the REST API see the same ids in every pipeline; one pipeline per DAG (each model gets its own schedule,
``max_active_runs`` and trigger form). ``training_params`` is the matching typed trigger form.
``model_name=None`` keeps the configured ``mlflow.model_name`` (the jobs read it themselves);
another name is passed to the jobs as ``--model-name`` so two pipelines never touch each
other's aliases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import Param, task

from jobs.core.config import PipelineConfig
from recsys_airflow.approval import PromotionApproval
from recsys_airflow.launcher import JobOperator
from recsys_airflow.links import RegistryJobOperator
from recsys_airflow.training import train_task

RUN_TAG = "{{ dag.dag_id }}__{{ run_id | replace(':', '_') | replace('+', '_') }}"
DEFAULT_TRAINER = "jobs.train"
# The caller's context on the registered version (the lineage — window, snapshot, gate decision —
# is read by the registration job itself from the snapshot manifest and the training run).
CONTEXT_TAGS = (
    "{{ {'airflow_run_id': run_id, 'airflow_dag_id': dag.dag_id, 'trigger_reason': params.reason,"
    " 'report_html': params.report_html or ''} | tojson }}"
)


@dataclass(frozen=True)
class ModelPipeline:
    """The tasks ``model_pipeline`` added, for wiring more tasks around them."""

    plan: Any
    snapshot: JobOperator
    train: Any
    fresh: Any
    evaluate: JobOperator
    register: JobOperator
    infra_validate: JobOperator
    blessed: Any
    promote: JobOperator
    approve: Any = None


def training_params(cfg: PipelineConfig) -> dict[str, Param]:
    """The typed trigger form every model pipeline takes (defaults from the ``training`` config)."""
    return {
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train even when a registered version was trained on the same snapshot content, code and "
            "parameters (the cache); the gate still decides promotion.",
        ),
        "epochs": Param(
            cfg.training.epochs, type="integer", minimum=1, maximum=200, title="Epochs", description="Training epochs."
        ),
        "window_days": Param(
            cfg.training.window_days,
            type="integer",
            minimum=1,
            maximum=90,
            title="Window (days)",
            description="Validated curated days before the evaluation day used for training.",
        ),
        "day": Param(
            None,
            type=["null", "string"],
            pattern=r"^$|^\d{4}-\d{2}-\d{2}$",
            title="Evaluation day",
            description="YYYY-MM-DD held out for the gate (the window ends the day before); "
            "empty = the latest validated curated day.",
        ),
        "replay_days": Param(
            cfg.gate.replay_days,
            type="integer",
            minimum=0,
            maximum=30,
            title="Replay days",
            description="Validated days after the held-out day pooled into the gate's evidence "
            "(the held-out day moves back by as many days). Default: gate.replay_days.",
        ),
        "reason": Param(
            "scheduled",
            type="string",
            maxLength=500,
            title="Reason",
            description="Why this training runs (set by the drift monitor; free text from the UI).",
        ),
        "require_approval": Param(
            cfg.gate.require_approval,
            type="boolean",
            title="Require approval",
            description="A person approves the blessed version before promotion (the approve task waits "
            "for Approve/Reject in Required actions or over REST). Default: gate.require_approval.",
        ),
        "report_html": Param(
            None,
            type=["null", "string"],
            maxLength=1000,
            title="Drift report",
            description="The drift report (HTML) that triggered this run, if any.",
        ),
    }


def pick_days(validated: list[str], day: str | None, limit: str, replay_days: int) -> tuple[str, list[str]]:
    """The held-out day D and the replay days after it (pure).

    ``day`` given: D = day, replayed = up to ``replay_days`` validated days after it (≤ ``limit``).
    Otherwise D = the validated day ``replay_days`` places before the newest one ≤ ``limit``
    (with fewer days, the oldest), so that the newest days are the replay.
    """
    eligible = [d for d in sorted(validated) if d <= limit]
    if day:
        if day not in validated:
            raise ValueError(f"day {day} is not a validated curated day (validated: {sorted(validated)[-5:]})")
    elif not eligible:
        raise ValueError("no validated curated day to evaluate on: run recsys_ingest first")
    else:
        day = eligible[max(0, len(eligible) - 1 - replay_days)]
    return day, [d for d in eligible if d > day][:replay_days]


@task(multiple_outputs=True)
def plan(params: dict | None = None, data_interval_end=None) -> dict:
    """Pick the evaluation day D (latest validated curated day unless given, or ``replay_days``
    before it), the replay days after it and the window."""
    from jobs.core import catalog
    from jobs.core.config import get_config

    limit = data_interval_end.date().isoformat() if data_interval_end and not params["day"] else "9999-12-31"
    day, replayed = pick_days(catalog.validated_days(get_config()), params["day"], limit, int(params["replay_days"]))
    print(f"held-out day {day}; replay days: {', '.join(replayed) or 'none'}")
    return {
        "day": day,
        "window_days": int(params["window_days"]),
        "reason": params["reason"],
        "replay_days": ",".join(replayed),
    }


@task.short_circuit(ignore_downstream_trigger_rules=True)
def fresh(trained: dict) -> bool:
    """Stop here (nothing to evaluate, register or promote) when the trainer found its cache key
    on a registered version: the same snapshot content, code and parameters made that model."""
    if trained.get("cached"):
        print(
            f"cached: version {trained['cached_version']} ({trained['model_uri']}) was trained on the same snapshot "
            f"content, code and parameters (cache key {trained['cache_key']}); nothing registered or promoted. "
            "Trigger with force_retrain to train anyway (the gate still decides)."
        )
        return False
    return True


@task.short_circuit(ignore_downstream_trigger_rules=True)
def blessed(evaluation: dict) -> bool:
    """Stop here (skip promotion) unless the gate blessed the challenger."""
    print(f"gate decision: {'BLESSED' if evaluation['blessed'] else 'NOT blessed'} — {evaluation['reason']}")
    return bool(evaluation["blessed"])


def model_pipeline(
    cfg: PipelineConfig,
    *,
    model_name: str | None = None,
    train_module: str = DEFAULT_TRAINER,
    train_args: Sequence[str] = ("--epochs", "{{ params.epochs }}"),
    outlets: Sequence[Any] = (),
    train_doc_md: str = "Same argv locally and in the GPU pod; resumes from the last epoch checkpoint on retry.",
) -> ModelPipeline:
    """Add the gated pipeline for one model to the DAG being defined (call it inside ``@dag``).

    Args:
        cfg: the pipeline configuration (launcher, pools, storage zones).
        model_name: registered MLflow model; ``None`` = ``mlflow.model_name`` from the config.
        train_module: the trainer CLI (``python -m <train_module>``), e.g. ``jobs.train``.
        train_args: trainer flags between ``--snapshot S`` and ``--run-name R`` (templated).
        outlets: Assets the promotion emits (e.g. the champion Asset its consumers schedule on).
        train_doc_md: the train task's doc.

    Returns:
        The tasks, already wired; task ids are ``plan``, ``snapshot``, ``train``, ``fresh``,
        ``evaluate``, ``register``, ``infra_validate``, ``blessed``, ``promote``.

    Long because it wires the whole gated chain, one call per task, top to bottom.
    """
    name_args = ["--model-name", model_name] if model_name else []
    planned = plan()
    snapshot = JobOperator(
        task_id="snapshot",
        module="jobs.snapshot",
        spark=True,
        job_args=["--day", planned["day"], "--window-days", planned["window_days"]],
    )
    train = train_task(
        cfg,
        "train",
        [
            "--snapshot",
            snapshot.output["uri"],
            *train_args,
            "--force-retrain={{ params.force_retrain | lower }}",
            *name_args,
            "--run-name",
            RUN_TAG,
            "--checkpoint-dir",
            cfg.storage.zone("checkpoints") + "/" + RUN_TAG,
        ],
        module=train_module,
        doc_md=train_doc_md,
    )
    evaluate = JobOperator(
        task_id="evaluate",
        module="jobs.evaluate",
        job_args=[
            "gate",
            "--snapshot",
            snapshot.output["uri"],
            "--run-id",
            train.output["run_id"],
            "--model-uri",
            train.output["model_uri"],
            "--replay-days",
            planned["replay_days"],
            *name_args,
        ],
        doc_md="The gate: challenger vs champion, popularity and recent popularity (and the oracle), "
        "paired per user over the held-out day and the replay days after it.",
    )
    register = RegistryJobOperator(
        task_id="register",
        module="jobs.registry",
        job_args=[
            "register",
            "--run-id",
            train.output["run_id"],
            "--model-uri",
            train.output["model_uri"],
            "--snapshot",
            snapshot.output["uri"],
            "--tags",
            CONTEXT_TAGS,
            *name_args,
        ],
        pool="model_registry",
        doc_md="A new version (alias challenger) tagged with its window, snapshot, gate decision and code version.",
    )
    infra_validate = JobOperator(
        task_id="infra_validate",
        module="jobs.evaluate",
        job_args=["infra", "--model-uri", register.output["model_uri"], "--snapshot", snapshot.output["uri"]],
        doc_md="Fresh process: load by registry URI, score a smoke batch, check shape/types/no seen items.",
    )
    promote = JobOperator(
        task_id="promote",
        module="jobs.registry",
        job_args=[
            "promote",
            "--version",
            register.output["version"],
            "--expected-champion",
            evaluate.output["champion_version"],
            "--reason",
            evaluate.output["reason"],
            "--actor",
            "{{ dag.dag_id }}/{{ run_id }}",
            *name_args,
        ],
        pool="model_registry",
        outlets=list(outlets),
    )

    new = fresh(train.output)
    planned >> snapshot >> train >> new >> evaluate >> register >> infra_validate
    gate = blessed(evaluate.output)
    approve = PromotionApproval(
        task_id="approve",
        model_name=model_name or cfg.mlflow.model_name,
        mlflow_url=cfg.mlflow.public_url,
        doc_md="A person approves or rejects the blessed version (when require_approval): "
        "gate numbers and the model card link in the request; the decision is tagged on the version.",
    )
    infra_validate >> gate >> approve >> promote
    return ModelPipeline(planned, snapshot, train, new, evaluate, register, infra_validate, gate, promote, approve)
