"""Authoring pieces of a gated model pipeline: one builder per step (``PipelineSteps``), which
``recsys_train`` wires in its own last lines, and ``model_pipeline``, one call that adds and wires
them all (``recsys_popularity``).

For families f1..fn the chain is

    plan → snapshot → select_families → train_<f> → fresh_<f> → evaluate_<f>   (per family, in parallel)
        → tournament → register → infra_validate → blessed → approve → promote

with the contracts of ``recsys_train`` (the first pipeline built from it):

* **plan** picks the held-out day D (``params.day`` or the latest validated curated day
  not after the run's data interval — ``params.replay_days`` days before it when the replay gate
  is on), the replay days after D and the window (``params.window_days``);
* **snapshot** (``jobs.snapshot``, Spark) publishes the time-split train/test snapshot of D once;
* **select_families** branches to the ``train_<f>`` of the run's families (``params.families``
  when the pipeline builds several: ``training_params(cfg, families)``; default
  ``training.families``, the ``training.optional_families`` only when named); a family left
  out is skipped with its gate, and the tournament ranks the others;
* **train_<f>** runs ``python -m <family.module> --snapshot S <family.args> --run-name R
  --checkpoint-dir C`` through ``recsys_airflow.training.train_task``, so the profile still picks
  a local subprocess or a ``KubernetesPodOperator`` (a GPU pod, or a CPU pod for a family with
  ``gpu=False``; same argv and XCom). Any module that honours the trainer's CLI contract is a
  family (``FAMILIES``: mf = ``jobs.train``, ease = ``jobs.ease``): it logs an MLflow pyfunc
  (input ``user_id``/``k``, output ``user_id``/``item_ids``/``scores``) and reports
  ``{"run_id", "model_uri", ...}``;
* **fresh_<f>** skips that family's gate when its trainer reported ``cached``
  (``jobs.core.cache``: a registered version was trained on the same snapshot content, code and
  parameters; the log says which); ``force_retrain`` makes the trainers train anyway; with
  every family cached the tournament and everything after it is skipped;
* **evaluate_<f>** (``jobs.evaluate gate``) is the same gate for every family, against the
  champion *of this model name*, popularity and recent popularity, pooled over the held-out
  day and the replay days; **tournament** (``recsys_airflow.tournament``) ranks the candidates:
  the blessed one with the best pooled NDCG@K becomes the challenger; **register**
  (``jobs.registry register --candidates``) adds a version per candidate (tag ``family``; a
  loser's reason) and gives the challenger the alias ``challenger`` and its lineage (window,
  snapshot, gate decision, code version, read from the snapshot manifest and the training
  run); **infra_validate**
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
other's aliases. Every family of a pipeline registers under its one model name, so the champion
is served whatever its family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import Param, task

from jobs.core.config import PipelineConfig
from recsys_airflow.approval import PromotionApproval
from recsys_airflow.defaults import day_param
from recsys_airflow.launcher import JobOperator
from recsys_airflow.links import RegistryJobOperator
from recsys_airflow.tournament import standings
from recsys_airflow.training import cpu_only, train_task

RUN_TAG = "{{ dag.dag_id }}__{{ run_id | replace(':', '_') | replace('+', '_') }}"
# The caller's context on the registered version (the lineage — window, snapshot, gate decision —
# is read by the registration job itself from the snapshot manifest and the training run).
CONTEXT_TAGS = (
    "{{ {'airflow_run_id': run_id, 'airflow_dag_id': dag.dag_id, 'trigger_reason': params.reason,"
    " 'report_html': params.report_html or ''} | tojson }}"
)


@dataclass(frozen=True)
class Family:
    """A model family: a trainer module honouring the trainer CLI contract and its flags."""

    name: str
    module: str
    args: Sequence[str] = ()
    gpu: bool = True
    doc_md: str = ""


FAMILIES = {  # the families ``training.families`` may name; a new one is one more entry
    "mf": Family(
        "mf",
        "jobs.train",
        ("--epochs", "{{ params.epochs }}"),
        gpu=True,
        doc_md="Matrix factorisation (BPR): same argv locally and in the GPU pod; resumes from the last "
        "epoch checkpoint on retry.",
    ),
    "ease": Family(
        "ease",
        "jobs.ease",
        (),
        gpu=False,
        doc_md="EASE, closed form on the window (λ = training.ease_l2) with its recency prior "
        "(training.ease_recent_weight over the last training.ease_recent_days days): a CPU pod, no GPU; exports "
        "the same artifact as MF (history rows × Bᵀ, the prior as the item bias).",
    ),
    "seq": Family(
        "seq",
        "jobs.seq",
        ("--epochs", "{{ params.epochs }}"),
        gpu=True,
        doc_md="Sequential (SASRec-style transformer over each user's recent history): the GPU pod in the "
        "cluster profile (bf16, torchrun for > 1 GPU), CPU locally; exports the encoder's state for the "
        "user's latest history × the item embeddings; resumes from the last epoch checkpoint on retry.",
    ),
}


def families_of(names: Sequence[str]) -> list[Family]:
    """The families named (``training.families``), in that order; ValueError naming an unknown one."""
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ValueError(f"training.families: unknown famil(ies) {unknown}; known: {sorted(FAMILIES)}")
    return [FAMILIES[n] for n in names]


@dataclass(frozen=True)
class ModelPipeline:
    """The tasks ``model_pipeline`` added, for wiring more tasks around them (per family: dicts by name)."""

    plan: Any
    snapshot: JobOperator
    select: Any
    train: dict[str, Any]
    fresh: dict[str, Any]
    evaluate: dict[str, JobOperator]
    tournament: Any
    register: JobOperator
    infra_validate: JobOperator
    blessed: Any
    promote: JobOperator
    approve: Any = None


def training_params(cfg: PipelineConfig, families: Sequence[str] = ()) -> dict[str, Param]:
    """The typed trigger form every model pipeline takes (defaults from the ``training`` config).

    ``families``: the families the pipeline builds; with more than one the form gets a
    ``families`` choice among them (default ``training.families``: the rest are built but trained
    only when a run names them, ``training.optional_families``).
    """
    choice = {}
    if len(families) > 1:
        default = [f for f in families if f in cfg.training.families] or list(families)
        choice["families"] = Param(
            default,
            type="array",
            items={"type": "string", "enum": list(families)},
            minItems=1,
            maxItems=len(families),
            uniqueItems=True,
            title="Families",
            description=f"Model families this run trains and lets compete (of {', '.join(families)}); default "
            "training.families. A family left out is skipped: not trained, not a candidate.",
        )
    form = {
        "force_retrain": Param(
            False,
            type="boolean",
            title="Force retrain",
            description="Train even when a registered version was trained on the same snapshot content, code and "
            "parameters (the cache); the gate still decides promotion.",
        ),
        "epochs": Param(
            cfg.training.epochs,
            type="integer",
            minimum=1,
            maximum=200,
            title="Epochs",
            description="Epochs of the epoch-trained families (MF, sequential); EASE is closed form.",
        ),
        "window_days": Param(
            cfg.training.window_days,
            type="integer",
            minimum=1,
            maximum=90,
            title="Window (days)",
            description="Validated curated days before the held-out day used for training.",
        ),
        "day": day_param(
            "Held-out day",
            "YYYY-MM-DD held out for the gate (the window ends the day before); empty = the latest validated "
            "curated day.",
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
    return form | choice


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
    """Pick the held-out day D (latest validated curated day unless given, or ``replay_days``
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
        "families": params.get("families"),  # None: a pipeline without the choice trains every family
    }


def chosen_families(selected: Sequence[str] | None, built: Sequence[str]) -> list[str]:
    """The families a run trains (pure): ``selected`` (the run's ``families``) in the built order,
    every built one when None; ValueError naming a family the pipeline does not build."""
    if selected is None:
        return list(built)
    unknown = sorted(set(selected) - set(built))
    if unknown or not selected:
        raise ValueError(f"families {list(selected)}: the pipeline builds {list(built)} (unknown: {unknown})")
    return [f for f in built if f in selected]


@task.branch
def select_families(selected: list[str] | None, built: list[str]) -> list[str]:
    """Follow ``train_<f>`` of the families this run trains; the others (and their gates) are skipped."""
    chosen = chosen_families(selected, built)
    left = [f for f in built if f not in chosen]
    print(
        f"training {', '.join(chosen)}" + (f"; skipped (not in this run's families): {', '.join(left)}" if left else "")
    )
    return [f"train_{f}" for f in chosen]


@task.short_circuit(ignore_downstream_trigger_rules=False)
def fresh(trained: dict) -> bool:
    """Skip this family's gate (it enters no tournament) when its trainer found its cache key on
    a registered version: the same snapshot content, code and parameters made that model."""
    if trained.get("cached"):
        print(
            f"cached: version {trained['cached_version']} ({trained['model_uri']}) was trained on the same snapshot "
            f"content, code and parameters (cache key {trained['cache_key']}); this family registers nothing. "
            "Trigger with force_retrain to train anyway (the gate still decides)."
        )
        return False
    return True


@task(multiple_outputs=True, trigger_rule="none_failed_min_one_success")
def tournament(evaluations: dict, trained: dict, order: list[str]) -> dict:
    """The families' candidates ranked (``recsys_airflow.tournament.standings``); the winner is the
    challenger. Skipped (and with it everything after) when no family was gated: all cached."""
    from airflow.sdk.exceptions import AirflowSkipException

    result = standings(evaluations, trained, order)
    if result["winner"] is None:
        raise AirflowSkipException(f"{result['reason']}: nothing registered or promoted")
    for c in result["candidates"]:
        state = "blessed" if c["blessed"] else "refused"
        print(f"#{c['rank']} {c['family']}: {state}, pooled ndcg {c['ndcg']:.4f} (low {c['low']:.4f}) — {c['tags']}")
    for family, version in result["cached"].items():
        print(f"{family}: cached as version {version}, not a candidate")
    print(f"challenger: {result['winner']} — {result['reason']}")
    return result


@task.short_circuit(ignore_downstream_trigger_rules=True)
def blessed(evaluation: dict) -> bool:
    """Stop here (skip promotion) unless the gate blessed the challenger."""
    print(f"gate decision: {'BLESSED' if evaluation['blessed'] else 'NOT blessed'} — {evaluation['reason']}")
    return bool(evaluation["blessed"])


@dataclass(frozen=True)
class Candidate:
    """One family's tasks: its trainer, the cache check and its gate (``train_<f>``, ``fresh_<f>``,
    ``evaluate_<f>``); chain them ``train >> fresh >> evaluate``."""

    family: str
    train: Any
    fresh: Any
    evaluate: JobOperator


@dataclass(frozen=True)
class PipelineSteps:
    """One builder per step of a gated model pipeline (call them inside ``@dag``).

    Each builder adds one task (``candidate``: a family's three) fed by the outputs of the steps
    it names, so data flows as XComArgs; the order of the steps is the DAG file's to wire, in its
    last lines (``recsys_train``), or ``model_pipeline``'s. ``model_name=None`` keeps the
    configured ``mlflow.model_name`` (the jobs read it themselves); another name is passed to the
    jobs as ``--model-name`` so two pipelines never touch each other's aliases.
    """

    cfg: PipelineConfig
    model_name: str | None = None

    @property
    def _name_args(self) -> list[str]:
        return ["--model-name", self.model_name] if self.model_name else []

    def plan(self) -> Any:
        """``plan``: the held-out day D, the replay days and the window (``params``)."""
        return plan()

    def snapshot(self, planned: Any) -> JobOperator:
        """``snapshot``: ``jobs.snapshot`` publishes the time-split snapshot of the planned day once."""
        return JobOperator(
            task_id="snapshot",
            module="jobs.snapshot",
            spark=True,
            job_args=["--day", planned["day"], "--window-days", planned["window_days"]],
        )

    def candidate(self, family: Family, snapshot: JobOperator, planned: Any) -> Candidate:
        """``train_<f>``, ``fresh_<f>`` and ``evaluate_<f>`` of one family on the snapshot."""
        f = family.name
        train = train_task(
            self.cfg if family.gpu else cpu_only(self.cfg),
            f"train_{f}",
            [
                "--snapshot",
                snapshot.output["uri"],
                *family.args,
                "--force-retrain={{ params.force_retrain | lower }}",
                *self._name_args,
                "--run-name",
                f"{RUN_TAG}__{f}",
                "--checkpoint-dir",
                self.cfg.storage.zone("checkpoints") + "/" + RUN_TAG + "/" + f,
            ],
            module=family.module,
            doc_md=family.doc_md or f"The {f} family's trainer (python -m {family.module}).",
        )
        evaluate = JobOperator(
            task_id=f"evaluate_{f}",
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
                *self._name_args,
            ],
            doc_md=f"The gate for the {f} candidate: vs champion, popularity and recent popularity (and the "
            "oracle), paired per user over the held-out day and the replay days after it — the same evidence "
            "for every family.",
        )
        return Candidate(f, train, fresh.override(task_id=f"fresh_{f}")(train.output), evaluate)

    def select(self, planned: Any, candidates: Sequence[Candidate]) -> Any:
        """``select_families``: a branch to the ``train_<f>`` of the run's families (``params.families``)."""
        chosen = select_families(planned["families"], [c.family for c in candidates])
        for c in candidates:
            chosen >> c.train
        return chosen

    def tournament(self, candidates: Sequence[Candidate]) -> Any:
        """``tournament``: the gated candidates ranked; the winner is the challenger."""
        return tournament(
            {c.family: c.evaluate.output for c in candidates},
            {c.family: c.train.output for c in candidates},
            [c.family for c in candidates],
        )

    def register(self, ranked: Any, snapshot: JobOperator) -> JobOperator:
        """``register``: a version per candidate; the winner gets alias ``challenger``."""
        return RegistryJobOperator(
            task_id="register",
            module="jobs.registry",
            job_args=[
                "register",
                "--candidates",
                ranked["candidates"],
                "--snapshot",
                snapshot.output["uri"],
                "--tags",
                CONTEXT_TAGS,
                *self._name_args,
            ],
            pool="model_registry",
            doc_md="A version per candidate (tag family; a loser tagged with its reason); the tournament's winner "
            "gets alias challenger, tagged with its window, snapshot, gate decision and code version.",
        )

    def infra_validate(self, registered: JobOperator, snapshot: JobOperator) -> JobOperator:
        """``infra_validate``: the challenger loaded by registry URI in a fresh process."""
        return JobOperator(
            task_id="infra_validate",
            module="jobs.evaluate",
            job_args=["infra", "--model-uri", registered.output["model_uri"], "--snapshot", snapshot.output["uri"]],
            doc_md="Fresh process: load the challenger by registry URI, score a smoke batch, check "
            "shape/types/no seen items.",
        )

    def blessed(self, ranked: Any) -> Any:
        """``blessed``: skips promotion unless the gate blessed the challenger."""
        return blessed(ranked)

    def approve(self) -> PromotionApproval:
        """``approve``: a person's Approve/Reject when ``require_approval``, else passes at once."""
        return PromotionApproval(
            task_id="approve",
            model_name=self.model_name or self.cfg.mlflow.model_name,
            mlflow_url=self.cfg.mlflow.public_url,
            doc_md="A person approves or rejects the blessed version (when require_approval): "
            "gate numbers and the model card link in the request; the decision is tagged on the version.",
        )

    def promote(self, registered: JobOperator, ranked: Any, outlets: Sequence[Any] = ()) -> JobOperator:
        """``promote``: moves ``champion`` (compare-and-set on the champion the gate saw), emits ``outlets``."""
        return JobOperator(
            task_id="promote",
            module="jobs.registry",
            job_args=[
                "promote",
                "--model-version",
                registered.output["version"],
                "--expected-champion",
                ranked["champion_version"],
                "--reason",
                ranked["reason"],
                "--actor",
                "{{ dag.dag_id }}/{{ run_id }}",
                *self._name_args,
            ],
            pool="model_registry",
            outlets=list(outlets),
        )


def model_pipeline(
    cfg: PipelineConfig,
    *,
    families: Sequence[Family],
    model_name: str | None = None,
    outlets: Sequence[Any] = (),
) -> ModelPipeline:
    """Add the whole gated pipeline for one model to the DAG being defined, wired in the order
    ``recsys_train`` shows in its last lines (call it inside ``@dag``).

    Args:
        cfg: the pipeline configuration (launcher, pools, storage zones).
        families: the competing families (``families_of(cfg.training.families)``, or one's own
            ``Family``), in tie-break order; one family makes a one-candidate tournament.
        model_name: registered MLflow model; ``None`` = ``mlflow.model_name`` from the config.
        outlets: Assets the promotion emits (e.g. the champion Asset its consumers schedule on).

    Returns:
        The tasks, already wired; task ids are ``plan``, ``snapshot``, ``select_families``, ``train_<f>``,
        ``fresh_<f>``, ``evaluate_<f>`` per family, ``tournament``, ``register``,
        ``infra_validate``, ``blessed``, ``approve``, ``promote``.
    """
    if not families or len({f.name for f in families}) != len(families):
        raise ValueError(f"model_pipeline needs distinct families, got {[f.name for f in families]}")
    steps = PipelineSteps(cfg, model_name)
    planned = steps.plan()
    snapshot = steps.snapshot(planned)
    candidates = [steps.candidate(family, snapshot, planned) for family in families]
    chosen = steps.select(planned, candidates)
    ranked = steps.tournament(candidates)
    registered = steps.register(ranked, snapshot)
    validated = steps.infra_validate(registered, snapshot)
    gate = steps.blessed(ranked)
    approve = steps.approve()
    promote = steps.promote(registered, ranked, outlets)

    for c in candidates:
        planned >> snapshot >> chosen >> c.train >> c.fresh >> c.evaluate >> ranked
    ranked >> registered >> validated >> gate >> approve >> promote
    return ModelPipeline(
        planned,
        snapshot,
        chosen,
        {c.family: c.train for c in candidates},
        {c.family: c.fresh for c in candidates},
        {c.family: c.evaluate for c in candidates},
        ranked,
        registered,
        validated,
        gate,
        promote,
        approve,
    )
